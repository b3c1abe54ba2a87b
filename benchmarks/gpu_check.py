"""One prepared performance check of elit on a GPU (H100 / H200: under 10 minutes), or on the CPU
with a tiny model (`--smoke`, well under a minute) to test the script itself.

    bash benchmarks/gpu_check.sh                 # GPU: DiT-XL/2 and ELIT-DiT-XL/2 at 256px (32x32x4 latents)
    python benchmarks/gpu_check.py --smoke       # CPU: every section on a tiny model, 2 iterations

Sections (each in its own try/except: one failure prints its error and the others still run):
  1. training: images/s and MFU of the real training step (elit.train.Trainer: flow loss, backward,
     clip, fused AdamW on CUDA, EMA) for DiT-XL/2 and multi-budget ELIT-DiT-XL/2, bf16 autocast,
     TF32, the repeated blocks compiled; synthetic latents already on the device (no data loading).
     MFU = 3 x forward GFLOPs (elit.cost.analytic_gflops, mean over the budgets drawn in the timed
     steps) x images/s / the card's peak dense bf16 FLOP/s.
  2. forward: time vs FLOPs per budget at batch 32 and 64 (bf16 weights, no grad, eager); target:
     time ratio <= 1.10 x FLOP ratio (both vs the full budget).
  3. sampling: images/s of elit.sample at each budget with CFG and with cheap CFG (weak pass at the
     lowest budget), then one sampling step replayed from a CUDA graph (one captured forward with
     static input buffers) against the eager step at a fixed budget.
  4. the forward of 2 again with the blocks compiled (last: it compiles again, and the time limit
     cuts it first).
Peak GPU memory is printed per section; a machine-readable line `GPU_CHECK_JSON {...}` ends the output.
Figures are of randomly initialised weights: timing does not depend on the values.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import elit
from elit.cost import analytic_gflops
from elit.model import ELITModel
from elit.sampling import sampling_gflops
from elit.train import distributed as D
from elit.train.config import load_config
from elit.train.trainer import Trainer

MFU_TARGET = 0.45            # training MFU at least this
FORWARD_TARGET = 1.10        # forward time ratio at most this x the FLOP ratio (batch >= 32)
GiB = 1024 ** 3

# Peak dense bf16 tensor FLOP/s by card (no sparsity), from the vendor's data sheets.
PEAKS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12))

# The models: the paper's 256px configs (input 32x32x4 latents), with synthetic data; --smoke
# shrinks them to width 64, depth 4 (1-2-1), 8x8x4 inputs, 10 classes.
CONFIGS = {"DiT-XL/2": ("imagenet256-dit-xl2", ["log.sample_budgets=null"]),
           "ELIT-DiT-XL/2 (multi-budget)": ("imagenet256-elit-dit-xl2-mb", [])}
COMMON = ["data.name=synthetic", "system.compile=false", "log.progress=false", "log.tensorboard=false",
          "system.num_workers=0"]
SMOKE = ["model.hidden_size=64", "model.depth=4", "model.num_heads=4", "model.input_size=32", "model.num_classes=10",
         "data.shape=[4,32,32]", "data.num_classes=10", "system.threads=1"]
SMOKE_ELIT = ["model.head_depth=1", "model.tail_depth=1"]     # the split: ELIT configs only


def log(text: str = "") -> None:
    print(text, flush=True)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------------------- the device
def peak_flops(name: str, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    for key, peak in PEAKS:
        if key == "H100" and "NVL" in name:   # H100 NVL: another clock; give --peak-tflops
            continue
        if key.lower() in name.lower():
            return peak, f"from the card name ({key})"
    return None, "unknown card: pass --peak-tflops"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Peak GPU memory of a section (reset at its start)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def peak(self) -> dict:
        if self.device.type != "cuda":
            return {}
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / GiB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / GiB}

    def report(self, what: str) -> dict:
        peak = self.peak()
        if peak:
            log(f"  peak GPU memory ({what}): {peak['peak_allocated_gib']:.2f} GiB allocated, "
                f"{peak['peak_reserved_gib']:.2f} GiB reserved")
        else:
            log(f"  peak GPU memory ({what}): n/a (CPU run)")
        return peak


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Timer:
    """Times a callable: CUDA events on the GPU (GPU time between the events), the wall clock
    (perf_counter) on the CPU. `time(fn)` returns seconds."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def time(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def describe(self) -> str:
        return "CUDA events" if self.cuda else "CUDA events: skipped: needs CUDA (wall clock used)"


# ---------------------------------------------------------------------------- compiling the blocks
def compile_repeated_blocks(model, how: str) -> str:
    """Compile the repeated blocks and the Read / Write in place (elit.compile_blocks: a dynamic
    sequence length, so every budget shares their graphs). how: 'inductor' (the default backend), 'dynamo-eager' (Dynamo tracing only,
    no code generation: the CPU smoke) or 'off'. Returns what was done."""
    if how == "off":
        return "not compiled (--compile off)"
    # A fresh start per model: Dynamo's recompile limit (8 graphs per code object) is shared by every
    # block of every model compiled in this process, and the models here differ in dtype and grad mode.
    torch._dynamo.reset()
    if how == "dynamo-eager":
        elit.compile_blocks(model, backend="eager")
        return "elit.compile_blocks(model, backend='eager') [Dynamo tracing only]"
    elit.compile_blocks(model)
    return "elit.compile_blocks(model)"


def compiled_graphs() -> int:
    """Graphs Dynamo compiled since its last reset (0 when nothing is compiled)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


# ---------------------------------------------------------------------------- CUDA graph helper
class HostConstantCache(TorchDispatchMode):
    """Serves the host-to-device copies of small constants a forward makes (elit's RoPE coordinates
    are built on the CPU and moved to the device at every call) from a cache, so that a captured
    forward makes none: a synchronous host copy cannot be captured in a CUDA graph. The cached
    tensors are never written by the forward (they are only read). Also counts what it could not
    cache and the host syncs (`.item()`, `bool(tensor)`), either of which breaks a capture."""

    LIMIT = 1 << 20   # bytes: constants only

    def __init__(self):
        super().__init__()
        self.cache, self.hits, self.misses, self.uncached, self.syncs = {}, 0, 0, [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
            return func(*args, **kwargs)
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        target = kwargs.get("device")
        if (func is torch.ops.aten._to_copy.default and src is not None and src.device.type == "cpu"
                and target is not None and torch.device(target).type != "cpu"
                and src.numel() * src.element_size() <= self.LIMIT):
            data = src.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            key = (src.dtype, tuple(src.shape), data, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
            if key in self.cache:
                self.hits += 1
                return self.cache[key]
            self.misses += 1
            out = self.cache[key] = func(*args, **kwargs)
            return out
        out = func(*args, **kwargs)
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        if any(isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dim() > 0 for a in leaves):
            outs = torch.utils._pytree.tree_leaves(out)
            if any(isinstance(o, torch.Tensor) and o.device.type != "cpu" for o in outs):
                self.uncached.append(str(func))
        return out


def capture_audit(config, budget) -> dict:
    """Run the model twice on the `meta` device (no memory, no weights) under HostConstantCache:
    host-to-device copies in the first forward, and what is left in the second (0 means a capture
    under the cache makes no host copy)."""
    with torch.device("meta"):
        model = ELITModel(config).eval()
        model.check_values = False
        x = torch.empty(2, *model.sample_shape())
        t = torch.empty(2)
        y = torch.zeros(2, dtype=torch.long)
    cache = HostConstantCache()
    with torch.no_grad(), cache:
        model(x, t, y, budget=budget)
        first = (cache.misses, len(cache.uncached), cache.syncs)
        model(x, t, y, budget=budget)
    return {"copies_first_forward": first[0] + first[1], "copies_left_after_cache": len(cache.uncached) - first[1],
            "cache_hits_second_forward": cache.hits, "host_syncs": cache.syncs, "uncached_ops": sorted(set(cache.uncached))}


# ---------------------------------------------------------------------------- models
def build_config(name: str, args):
    config, extra = CONFIGS[name]
    overrides = [*COMMON, *extra, f"train.global_batch_size={args.train_batch}"]
    if args.smoke:
        overrides += SMOKE + (SMOKE_ELIT if "elit" in config else [])
    return load_config(config, overrides)


def inference_model(config, device: torch.device):
    """An eval model with bf16 weights on the device (as `elit sample --dtype bfloat16`); the
    zero-initialised adaLN gates and output layer get small random values so outputs are not 0."""
    torch.manual_seed(0)
    with torch.device(device):
        model = ELITModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model.to(torch.bfloat16).eval()


def default_budgets(model) -> list[int]:
    J = model.budgets[-1]
    budgets = [b for b in (1, 2, 4, 8, 16, 32, 64) if b in model.budgets and b < J]
    return budgets + [J]


# ---------------------------------------------------------------------------- 1. training
class _Fixed:
    """A budget schedule that always returns one budget (the warm-up's)."""

    def __init__(self, budget):
        self.budget = budget

    def __call__(self, step):
        return self.budget


def train_one(name: str, args, env, peak, results: dict) -> None:
    device = env.device
    memory = Memory(device)
    cfg = build_config(name, args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, env)
        how = compile_repeated_blocks(trainer.model, args.compile)
        x, y = next(iter(trainer.loader))
        x, y = x.to(device), y.to(device)   # on the device before timing: data loading is not measured
        schedule, choices = trainer.budget_draws, trainer.budget_draws.choices
        # Warm-up: the full, lowest and a middle budget first (a size equal to another, or 1, is
        # specialised by Dynamo), so compilation happens before the timed steps; then draws.
        first = list(dict.fromkeys([choices[-1], choices[0], choices[len(choices) // 2]]))
        warm = first + [schedule(s) for s in range(max(args.train_warmup - len(first), 0))]
        compile_start = time.perf_counter()
        for b in warm:
            trainer.budget_draws = _Fixed(b)
            trainer.train_step(x, y)
        synchronize(device)
        warm_s = time.perf_counter() - compile_start
        trainer.budget_draws = schedule
        trainer.step, drawn = 0, []
        graphs_warm = compiled_graphs()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.train_steps):
            per_sample, _, budget, _ = trainer.train_step(x, y)
            drawn.append(budget)
            trainer.step += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        graphs_timed = compiled_graphs() - graphs_warm
        loss = float(per_sample.detach().mean())
        optimizer = type(trainer.optimizer).__name__ + (" (fused)" if trainer.optimizer.param_groups[0].get("fused") else "")
        amp = "bf16 autocast" if trainer.amp else "fp32"
        del trainer
    batch = cfg.train.global_batch_size
    ips = args.train_steps * batch / elapsed
    gflops_drawn = statistics.fmean(analytic_gflops(cfg.model, b) for b in drawn)
    gflops_expected = statistics.fmean(analytic_gflops(cfg.model, b) for b in choices)
    achieved = 3 * gflops_drawn * 1e9 * ips
    mfu = achieved / peak if peak else None
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    log(f"  {name}: batch {batch}, {amp}, TF32 {'on' if tf32 else 'off (CPU)' if device.type != 'cuda' else 'off'}, "
        f"optimizer {optimizer}")
    log(f"    compile: {how}")
    log(f"    warm-up {len(warm)} steps (budgets {warm}) took {warm_s:.1f} s (compilation included: "
        f"{graphs_warm} Dynamo graphs)")
    if graphs_timed:
        log(f"    WARNING: {graphs_timed} Dynamo graphs were compiled during the timed steps: the figure includes "
            f"compilation (raise --train-warmup)")
    budgets_text = ("full" if choices == [None] else
                    f"{len(drawn)} draws from {choices[0]}..{choices[-1]}, mean {statistics.fmean(drawn):.2f}")
    log(f"    timed {args.train_steps} steps: {elapsed:.3f} s -> {ips:.1f} img/s; budgets: {budgets_text}; last loss {loss:.4f}")
    log(f"    forward GFLOPs/img: {gflops_drawn:.2f} over the drawn budgets ({gflops_expected:.2f} expected over "
        f"the schedule); training = 3 x forward -> {achieved / 1e12:.2f} TFLOP/s")
    if mfu is None:
        log("    MFU: n/a (peak unknown: pass --peak-tflops)")
    else:
        verdict = "PASS" if mfu >= MFU_TARGET else "MISS"
        log(f"    MFU: {mfu:.1%}   [target >= {MFU_TARGET:.0%}: {verdict}{smoke_note(args)}]")
    results[name] = {"batch": batch, "images_per_s": ips, "fwd_gflops_per_image": gflops_drawn,
                     "fwd_gflops_expected": gflops_expected, "train_tflops_per_s": achieved / 1e12, "mfu": mfu,
                     "mfu_pass": None if mfu is None else mfu >= MFU_TARGET, "loss": loss, "compile": how,
                     "optimizer": optimizer, "precision": amp, "warmup_s": warm_s, "graphs_warmup": graphs_warm,
                     "graphs_timed": graphs_timed, **memory.report(name)}


def section_train(args, env, peak, results: dict) -> None:
    out = results.setdefault("train", {})
    for name in CONFIGS:
        if over_time(args, f"training {name}"):
            continue
        guarded(f"training {name}", lambda: train_one(name, args, env, peak, out), results, env.device)
        free_memory(env.device)   # the trainer (model, optimiser, EMA) before the next model


# ---------------------------------------------------------------------------- 2. forward vs FLOPs
def forward_table(model, config, budgets, batch: int, args, timer: Timer) -> list[dict]:
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *model.sample_shape(), generator=g).to(device, torch.bfloat16)
    t = torch.rand(batch, generator=g).to(device)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), generator=g).to(device)
    times = {b: [] for b in budgets}
    with torch.no_grad():
        for _ in range(args.forward_warmup):
            for b in budgets:
                model(x, t, y, budget=b)
        for _ in range(args.forward_repeats):   # interleaved, so load changes hit every budget alike
            for b in budgets:
                times[b].append(timer.time(lambda: model(x, t, y, budget=b)))
    full = budgets[-1]
    f_full, t_full = analytic_gflops(config, full), statistics.median(times[full])
    rows = []
    for b in budgets:
        f, tm = analytic_gflops(config, b), statistics.median(times[b])
        rows.append({"budget": b, "gflops": f, "flop_ratio": f / f_full, "time_ms": tm * 1e3,
                     "time_ratio": tm / t_full, "ratio_over_flops": (tm / t_full) / (f / f_full)})
    return rows


def print_forward(rows, batch: int, args) -> None:
    log(f"    batch {batch}:")
    log(f"    {'latents/group':>13} {'GFLOPs':>8} {'FLOP ratio':>10} {'time (ms)':>10} {'time ratio':>10} "
        f"{'time/FLOP':>9}  target <= {FORWARD_TARGET:.2f}")
    for r in rows:
        verdict = "PASS" if r["ratio_over_flops"] <= FORWARD_TARGET else "MISS"
        log(f"    {r['budget']:>13} {r['gflops']:>8.2f} {r['flop_ratio']:>10.3f} {r['time_ms']:>10.3f} "
            f"{r['time_ratio']:>10.3f} {r['ratio_over_flops']:>9.3f}  {verdict}{smoke_note(args)}")


def section_forward(args, env, results: dict, variant: str) -> None:
    """variant 'eager', or 'compiled' (the blocks compiled; run last, as it compiles again)."""
    device = env.device
    out = results.setdefault("forward", {})
    memory = Memory(device)
    config = build_config("ELIT-DiT-XL/2 (multi-budget)", args).model
    model = inference_model(config, device)
    budgets = args.budgets or default_budgets(model)
    timer = Timer(device)
    log(f"  ELIT-DiT-XL/2, bf16 weights, no grad, median of {args.forward_repeats} interleaved runs after "
        f"{args.forward_warmup} warm-up (every budget); {timer.describe()}; time and FLOP ratios vs the full budget")
    if variant == "compiled":
        log(f"  compile: {compile_repeated_blocks(model, args.compile)}")
    tables = out.setdefault(variant, {})
    for batch in args.forward_batches:
        if over_time(args, f"forward ({variant}) at batch {batch}"):
            break
        rows = forward_table(model, config, budgets, batch, args, timer)
        tables[str(batch)] = rows
        print_forward(rows, batch, args)
    if variant == "compiled":
        log(f"  Dynamo graphs compiled (warm-up and timing): {compiled_graphs()}")
    out[f"{variant}_memory"] = memory.report(f"forward, {variant}")
    del model
    free_memory(device)


# ---------------------------------------------------------------------------- 3. sampling
def sampling_table(model, budgets, args, device) -> dict:
    seeds = range(args.sample_batch)
    table = {}
    log(f"  elit.sample, euler {args.sample_steps} steps, batch {args.sample_batch}, lambda={args.scale:g}; "
        f"cheap CFG's weak pass at budget {model.budgets[0]}; images/s over {args.sample_repeats} run(s) after a "
        f"2-step warm-up; wall clock with synchronize")
    log(f"    {'latents/group':>13} {'mode':>5} {'GFLOPs/img':>10} {'img/s':>9} {'img/s x GFLOPs':>14}")
    for b in budgets:
        for mode in ("cfg", "ccfg"):
            if over_time(args, f"sampling budget {b} {mode}"):
                return table
            options = dict(budget=b, guidance=mode, scale=args.scale, batch_size=args.sample_batch)
            elit.sample(model, seeds, steps=2, **options)   # warm-up
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.sample_repeats):
                images = elit.sample(model, seeds, steps=args.sample_steps, **options)
            synchronize(device)
            ips = args.sample_repeats * args.sample_batch / (time.perf_counter() - start)
            if not bool(torch.isfinite(images).all()):
                raise RuntimeError(f"non-finite samples at budget {b} ({mode})")
            gf = sampling_gflops(model.config, args.sample_steps, budget=b, guidance=mode)
            table.setdefault(mode, {})[str(b)] = {"images_per_s": ips, "gflops_per_image": gf}
            # img/s x GFLOPs per image: constant when time tracks FLOPs (GFLOP/s achieved)
            log(f"    {b:>13} {mode:>5} {gf:>10.1f} {ips:>9.2f} {ips * gf:>14.1f}")
    return table


def graph_step(model, budget, args, device, timer: Timer) -> dict:
    """One CFG sampling step (batched cond + null forward at `budget`, then the Euler update),
    eager vs replayed from a CUDA graph; returns the per-step times and the output difference."""
    B, lam = args.sample_batch, args.scale
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, *model.sample_shape(), generator=g).to(device)
    y = torch.arange(B, device=device) % max(model.num_classes, 1)
    y2 = torch.cat([y, torch.full_like(y, model.null_class_id)])
    dtype = next(model.parameters()).dtype
    steps = args.sample_steps
    times = torch.linspace(1, 0, steps + 1).tolist()

    def eager(x, t, dt):   # as elit.sample's cfg evaluation at one budget: one batched forward
        v = model(torch.cat([x, x]).to(dtype), torch.full((2 * B,), t, device=device), y2, budget=budget).float()
        strong, weak = v.chunk(2)
        return x + dt * (strong + lam * (strong - weak))

    static_x = torch.zeros(2 * B, *model.sample_shape(), device=device, dtype=dtype)
    static_t = torch.zeros(2 * B, device=device)
    cache = HostConstantCache()
    was = model.check_values
    model.check_values = False   # its value check is a host sync, which a capture cannot hold
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), cache, torch.cuda.stream(side):
            for _ in range(3):   # warm-up on a side stream (cuBLAS workspaces, the constant cache)
                model(static_x, static_t, y2, budget=budget)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        before = (cache.misses, len(cache.uncached), cache.syncs)
        with torch.no_grad(), cache, torch.cuda.graph(graph):
            static_out = model(static_x, static_t, y2, budget=budget)
        captured = {"misses": cache.misses - before[0], "uncached": len(cache.uncached) - before[1],
                    "syncs": cache.syncs - before[2]}
    finally:
        model.check_values = was

    def replay(x, t, dt):
        static_x[:B].copy_(x)
        static_x[B:].copy_(x)
        static_t.fill_(t)
        graph.replay()
        strong, weak = static_out.float().chunk(2)
        return x + dt * (strong + lam * (strong - weak))

    with torch.no_grad():
        diff = (eager(x0, 0.5, -0.1) - replay(x0, 0.5, -0.1)).abs().max().item()
        scale = eager(x0, 0.5, -0.1).abs().max().item()
        result = {}
        for name, step in (("eager", eager), ("graph", replay)):
            def trajectory(step=step):
                x = x0
                for i in range(steps):
                    x = step(x, times[i], times[i + 1] - times[i])
                return x
            trajectory()   # warm-up
            seconds = timer.time(trajectory)
            result[name] = {"ms_per_step": seconds / steps * 1e3, "images_per_s": B / seconds}
    result.update(budget=budget, max_abs_diff=diff, max_abs_out=scale, captured=captured,
                  speedup=result["eager"]["ms_per_step"] / result["graph"]["ms_per_step"])
    return result


def section_sample(args, env, results: dict) -> None:
    device = env.device
    out = results.setdefault("sample", {})
    memory = Memory(device)
    config = build_config("ELIT-DiT-XL/2 (multi-budget)", args).model
    model = inference_model(config, device)
    budgets = args.budgets or default_budgets(model)

    def table():
        out["guidance"] = sampling_table(model, budgets, args, device)
    guarded("sampling (cfg / ccfg)", table, results, device)

    budget = args.graph_budget or max(model.budgets[-1] // 4, model.budgets[0])

    def graph():
        audit = capture_audit(config, budget)
        out["capture_audit"] = audit
        log(f"  CUDA graph at budget {budget}, CFG (one batched forward of {2 * args.sample_batch}), "
            f"{args.sample_steps} Euler steps:")
        log(f"    capture audit (meta device): {audit['copies_first_forward']} host-to-device copies per forward, "
            f"{audit['copies_left_after_cache']} left once cached; "
            f"{audit['host_syncs']} host syncs with the value check off"
            + (f"; uncached: {audit['uncached_ops']}" if audit["uncached_ops"] else ""))
        if device.type != "cuda":
            log("    CUDA graph capture and replay: skipped: needs CUDA")
            out["cuda_graph"] = "skipped: needs CUDA"
            return
        if over_time(args, "CUDA graph step"):
            return
        r = graph_step(model, budget, args, device, Timer(device))
        out["cuda_graph"] = r
        log(f"    eager step {r['eager']['ms_per_step']:.3f} ms ({r['eager']['images_per_s']:.2f} img/s), "
            f"graph step {r['graph']['ms_per_step']:.3f} ms ({r['graph']['images_per_s']:.2f} img/s): "
            f"{r['speedup']:.2f}x; max |eager - graph| after one step {r['max_abs_diff']:.3g} "
            f"(outputs up to {r['max_abs_out']:.3g}); during capture: {r['captured']['misses']} uncached copies, "
            f"{r['captured']['syncs']} syncs")
    guarded("sampling (CUDA graph)", graph, results, device)
    out.update(memory.report("sampling"))
    model = None   # (the closures above hold the name)
    free_memory(device)


# ---------------------------------------------------------------------------- driver
_STATE = {"start": time.perf_counter()}


def smoke_note(args) -> str:
    return " (smoke: not meaningful)" if args.smoke else ""


def over_time(args, what: str, reserve: float = 0.0) -> bool:
    """True (and says so) when the time limit, less `reserve` seconds, is spent."""
    elapsed = time.perf_counter() - _STATE["start"]
    if elapsed > args.time_limit - reserve:
        need = f", and it needs about {reserve:.0f} s" if reserve else ""
        log(f"  {what}: skipped: {elapsed:.0f} s of the time limit ({args.time_limit:.0f} s) are spent{need}")
        return True
    return False


def guarded(what: str, fn, results: dict, device) -> None:
    try:
        fn()
    except Exception as e:   # one failure must not lose the other figures
        log(f"  ERROR in {what}: {type(e).__name__}: {e}")
        log("  " + "".join(traceback.format_exc(limit=-4)).replace("\n", "\n  ").rstrip())
        results.setdefault("errors", {})[what] = f"{type(e).__name__}: {e}"
        free_memory(device)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--smoke", action="store_true", help="the CPU test of this script: tiny model, 2 iterations")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak dense bf16 TFLOP/s of the card (default: from its name; H100 SXM / H200 989, H100 PCIe 756)")
    ap.add_argument("--sections", default="train,forward,sample,forward-compiled", help="comma-separated subset")
    ap.add_argument("--compile", choices=("auto", "inductor", "dynamo-eager", "off"), default="auto",
                    help="auto: inductor on CUDA, Dynamo tracing only (backend eager) with --smoke")
    ap.add_argument("--train-batch", type=int, default=None, help="default 128 (smoke 4)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed steps per model; default 20 (smoke 2)")
    ap.add_argument("--train-warmup", type=int, default=None, help="default 5 (smoke 2)")
    ap.add_argument("--forward-batches", type=ints, default=None, help="default 32,64 (smoke 2,4)")
    ap.add_argument("--forward-repeats", type=int, default=None, help="default 20 (smoke 2)")
    ap.add_argument("--forward-warmup", type=int, default=None, help="default 3 (smoke 1)")
    ap.add_argument("--budgets", type=ints, default=None, help="latents per group; default 1,2,4,8 and J")
    ap.add_argument("--sample-batch", type=int, default=None, help="images per elit.sample call; default 32 (smoke 2)")
    ap.add_argument("--sample-steps", type=int, default=None, help="Euler steps; default 40 (smoke 2)")
    ap.add_argument("--sample-repeats", type=int, default=None, help="timed elit.sample calls; default 2 (smoke 1)")
    ap.add_argument("--scale", type=float, default=1.5, help="guidance lambda (w = 1 + lambda)")
    ap.add_argument("--graph-budget", type=int, default=None, help="budget of the CUDA graph step; default J/4")
    ap.add_argument("--time-limit", type=float, default=540.0,
                    help="seconds; sections not yet started when it is spent are skipped (default 540)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    defaults = {"train_batch": (128, 4), "train_steps": (20, 2), "train_warmup": (5, 2),
                "forward_batches": ([32, 64], [2, 4]), "forward_repeats": (20, 2), "forward_warmup": (3, 1),
                "sample_batch": (32, 2), "sample_steps": (40, 2), "sample_repeats": (2, 1)}
    for key, (gpu, smoke) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else gpu)
    if args.compile == "auto":
        args.compile = "dynamo-eager" if args.smoke else "inductor"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - {"train", "forward", "sample", "forward-compiled"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from train, forward, sample, forward-compiled")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _STATE["start"] = time.perf_counter()
    if args.smoke:
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        env = D.init_distributed("cpu")
    else:
        if not torch.cuda.is_available():
            log("gpu_check: no CUDA device; run with --smoke for the CPU check of this script")
            return 2
        env = D.init_distributed("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = env.device
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    peak, peak_source = peak_flops(card, args.peak_tflops)
    results = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke,
               "peak_tflops": None if peak is None else peak / 1e12, "compile_mode": args.compile}
    log(f"== elit GPU check{' (SMOKE: tiny model on the CPU; figures only test the script)' if args.smoke else ''}")
    log(f"card: {card} | torch {torch.__version__} | CUDA {torch.version.cuda} | elit {getattr(elit, '__version__', '?')}")
    log(f"peak dense bf16: {'unknown' if peak is None else f'{peak / 1e12:g} TFLOP/s'} ({peak_source})")
    log(f"compile of the repeated blocks (elit.compile_blocks): {args.compile}")
    # The compiled forward runs last: it compiles the blocks again (for no-grad bf16), which takes
    # minutes on a GPU, so the time limit cuts it first.
    steps = {"train": ("[1/4] training throughput and MFU", lambda: section_train(args, env, peak, results)),
             "forward": ("[2/4] forward time vs FLOPs per budget (eager)",
                         lambda: section_forward(args, env, results, "eager")),
             "sample": ("[3/4] sampling: CFG, cheap CFG, CUDA graph step", lambda: section_sample(args, env, results)),
             "forward-compiled": ("[4/4] forward time vs FLOPs per budget (blocks compiled)",
                                  lambda: section_forward(args, env, results, "compiled"))}
    for key, (title, fn) in steps.items():
        if key not in args.sections:
            continue
        log()
        log(f"== {title}  (t = {time.perf_counter() - _STATE['start']:.0f} s)")
        if key == "forward-compiled" and args.compile == "off":
            log("  skipped: --compile off")
            continue
        # The compiled forward compiles every block variant for no-grad bf16 first (minutes on a GPU).
        if over_time(args, title, reserve=0 if args.smoke or key != "forward-compiled" else 180):
            continue
        guarded(title, fn, results, device)
    results["wall_s"] = time.perf_counter() - _STATE["start"]
    summary(args, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    log("GPU_CHECK_JSON " + json.dumps(results, default=str))
    return 1 if results.get("errors") else 0


def summary(args, results: dict) -> None:
    log()
    log("== summary" + (" (SMOKE: targets not meaningful)" if args.smoke else ""))
    log(f"card: {results['card']} | torch {results['torch']} | CUDA {results['cuda']}")
    for name, r in results.get("train", {}).items():
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        verdict = "" if r["mfu"] is None else f" [target >= {MFU_TARGET:.0%}: {'PASS' if r['mfu_pass'] else 'MISS'}]"
        log(f"training {name}: {r['images_per_s']:.1f} img/s, MFU {mfu}{verdict}")
    for variant, tables in results.get("forward", {}).items():
        if variant not in ("eager", "compiled"):
            continue
        big = [row for batch, rows in tables.items() if int(batch) >= 32 or args.smoke for row in rows]
        if big:
            worst = max(row["ratio_over_flops"] for row in big)
            log(f"forward ({variant}): worst time ratio / FLOP ratio at batch >= 32 {worst:.3f} "
                f"[target <= {FORWARD_TARGET:.2f}: {'PASS' if worst <= FORWARD_TARGET else 'MISS'}]")
    graph = results.get("sample", {}).get("cuda_graph")
    if isinstance(graph, dict):
        log(f"CUDA graph step at budget {graph['budget']}: {graph['speedup']:.2f}x the eager step")
    errors = results.get("errors", {})
    log(f"sections with errors: {', '.join(errors) if errors else 'none'}")
    log(f"total wall time: {results['wall_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
