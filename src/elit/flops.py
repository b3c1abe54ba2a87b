"""FLOPs of one forward (per image) at each budget: analytic and measured.

Convention: FLOPs = 2 x multiply-adds, attention matrix products included; element-wise ops
(norms, activations, softmax) are not counted, as in DiT's and the ELIT paper's tables.

The analytic count follows ELIT-SPEC 2.7 (paper App. K) with two corrections: the attention
products are counted as 2 x MACs (the App. K table lists them as MACs: 2 N^2 d where the
measured count is 4 N^2 d), and the small terms (patch embed, timestep MLP, adaLN linears, final
layer) are included, so analytic and measured agree to well under 1%.
The measured count runs the real model on the `meta` device (no memory, no weights) under
`FlopCounterMode`, with SDPA forced to the math backend so that attention is counted.
"""
from __future__ import annotations

import json
import math
import pathlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from elit.models import ELITModel, ModelConfig, MODEL_PRESETS


def _geometry(cfg: ModelConfig, input_size: int | None):
    size = input_size or cfg.input_size
    if size % cfg.patch_size:
        raise ValueError(f"input size {size} is not divisible by the patch size {cfg.patch_size}")
    grid = (size // cfg.patch_size,) * 2
    return size, grid, math.prod(grid)


def _block_flops(L: int, d: int, hidden: int) -> float:
    # qkv 6Ld^2 + out proj 2Ld^2 + attention (QK^T and AV) 4L^2d + MLP 4Ldh + adaLN 12d^2 (per image)
    return 8 * L * d * d + 4 * L * L * d + 4 * L * d * hidden + 12 * d * d


def analytic_gflops(config: ModelConfig, budget: int | None = None, input_size: int | None = None) -> float:
    """Analytic GFLOPs of one forward of one image; budget = latents kept per group (None: full)."""
    cfg = config
    size, grid, N = _geometry(cfg, input_size)
    d, hidden, p = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio), cfg.patch_size
    out_ch = cfg.in_channels * (2 if cfg.learn_sigma else 1)
    total = 2 * N * cfg.in_channels * p * p * d          # patch embed
    total += 2 * (256 * d + d * d)                        # timestep MLP
    total += 4 * d * d + 2 * N * d * p * p * out_ch       # final adaLN + linear
    if not cfg.elit:
        return (total + cfg.depth * _block_flops(N, d, hidden)) / 1e9
    model_cfg = _built_config(cfg, size)
    window = model_cfg.resolved_window()
    J = model_cfg.resolved_latents_per_group()
    G = math.prod(g // w for g, w in zip(grid, window))
    j = J if budget is None else budget
    if not 1 <= j <= J:
        raise ValueError(f"budget {budget} is outside 1..{J}")
    spatial = cfg.head_depth + cfg.tail_depth
    total += spatial * _block_flops(N, d, hidden)
    total += (cfg.depth - spatial) * _block_flops(G * j, d, hidden)
    jr = J if cfg.write_sees_dropped else j               # latents the Read computes / Write sees
    # Read: q/out proj on latents, kv proj on tokens, grouped attention, ratio-1 MLP, adaLN
    total += 4 * G * jr * d * d + 4 * N * d * d + 4 * jr * N * d + 4 * G * jr * d * d
    total += 2 * d * cfg.read_adaln_chunks * d
    # Write: q/out proj on tokens, kv proj on latents, grouped attention, ratio-1 MLP on tokens
    total += 4 * N * d * d + 4 * G * jr * d * d + 4 * N * jr * d + 4 * N * d * d
    return total / 1e9


def _built_config(cfg: ModelConfig, input_size: int | None) -> ModelConfig:
    """The config a model built for `input_size` gets (window and J derive from it when unset)."""
    if input_size is None or input_size == cfg.input_size:
        return cfg
    return ModelConfig.from_dict({**cfg.to_dict(), "input_size": input_size})


def measured_gflops(config: ModelConfig, budget: int | None = None, input_size: int | None = None) -> float:
    """GFLOPs counted by torch's FlopCounterMode on a meta-device model (batch 1)."""
    size, _, _ = _geometry(config, input_size)
    with torch.device("meta"):
        model = ELITModel(_built_config(config, size)).eval()
        x = torch.empty(1, config.in_channels, size, size)
        t = torch.empty(1)
        y = torch.zeros(1, dtype=torch.long) if config.num_classes > 0 else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        model(x, t, y, budget=budget)
    return counter.get_total_flops() / 1e9


def budgets_of(config: ModelConfig, input_size: int | None = None) -> list[int | None]:
    if not config.elit:
        return [None]
    cfg = _built_config(config, input_size)
    return list(range(cfg.resolved_min_budget(), cfg.resolved_latents_per_group() + 1))


def resolve_model_config(name_or_dir: str) -> ModelConfig:
    """A preset name (`elit.list_models()`) or a model folder written by save_pretrained."""
    if name_or_dir in MODEL_PRESETS:
        return create_model_config(name_or_dir)
    path = pathlib.Path(name_or_dir)
    if path.is_dir():
        from elit.hub import read_config
        return read_config(path)[0]
    raise ValueError(f"{name_or_dir!r} is neither a model preset ({', '.join(MODEL_PRESETS)}) nor a model folder")


def create_model_config(name: str, **overrides) -> ModelConfig:
    return ModelConfig.from_dict({**MODEL_PRESETS[name], **overrides})


# ---------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="preset name (e.g. ELIT-DiT-XL/2) or a model folder")
    parser.add_argument("--input-size", type=int, default=None,
                        help="latent height/width (32 = 256px, 64 = 512px with an 8x VAE); default: the model's")
    parser.add_argument("--budgets", default=None, help="comma-separated latents per group (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per budget")
    parser.add_argument("--no-measure", action="store_true", help="analytic count only (skip FlopCounterMode)")
    sampling = parser.add_argument_group("cost of a sampling run (adds sample_gflops per row)")
    sampling.add_argument("--steps", type=int, default=None)
    sampling.add_argument("--sampler", default="euler", choices=["euler", "heun"])
    sampling.add_argument("--guidance", default="none", help="none | cfg | ccfg | ag")
    sampling.add_argument("--weak-budget", type=int, default=None)
    sampling.add_argument("--schedule", default=None, help="per-step budget rule (see `elit sample --help`)")


def _parse_budgets(text: str | None, valid: list) -> list:
    if text is None:
        return valid
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--budgets must be comma-separated integers (latents per group), got {text!r}") from None
    if valid == [None]:
        raise ValueError("this model has no latent interface; drop --budgets")
    bad = [b for b in budgets if b not in valid]
    if bad:
        raise ValueError(f"budgets {bad} are not valid for this model; valid: {valid[0]}..{valid[-1]}")
    return budgets


def flops_table(config: ModelConfig, budgets, input_size=None, measure=True) -> list[dict]:
    size = input_size or config.input_size
    full = analytic_gflops(config, None, size)
    rows = []
    for b in budgets:
        analytic = analytic_gflops(config, b, size)
        row = {"latents_per_group": b, "input_size": size, "analytic_gflops": round(analytic, 4),
               "gflops": round(measured_gflops(config, b, size), 4) if measure else round(analytic, 4),
               "fraction_of_full": round(analytic / full, 4), "measured": measure}
        rows.append(row)
    return rows


def run(args) -> int:
    config = resolve_model_config(args.model)
    size = args.input_size or config.input_size
    budgets = _parse_budgets(args.budgets, budgets_of(config, size))
    rows = flops_table(config, budgets, size, measure=not args.no_measure)
    for row in rows:
        row["model"] = args.model
        if args.steps is not None:
            from elit.sampling import sampling_gflops
            try:  # a schedule replaces the row's budget; autoguidance has no row at the lowest budget
                row["sample_gflops"] = round(sampling_gflops(
                    _built_config(config, size), steps=args.steps,
                    budget=None if args.schedule else row["latents_per_group"],
                    guidance=args.guidance, weak_budget=args.weak_budget, schedule=args.schedule,
                    sampler=args.sampler, input_size=size), 4)
            except ValueError as e:
                if len(rows) == 1:
                    raise
                row["sample_gflops"], row["sample_note"] = None, str(e)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{args.model} at input size {size}: GFLOPs per image, one forward, batch 1 "
          f"(FLOPs = 2 x multiply-adds, attention included)")
    head = f"{'latents/group':>13} {'measured':>10} {'analytic':>10} {'of full':>8}"
    if args.steps is not None:
        head += f" {'sampling run':>13}"
    print(head)
    for row in rows:
        b = "-" if row["latents_per_group"] is None else row["latents_per_group"]
        measured = f"{row['gflops']:>10.3f}" if row["measured"] else f"{'-':>10}"
        line = f"{b:>13} {measured} {row['analytic_gflops']:>10.3f} {row['fraction_of_full']:>8.1%}"
        if row.get("sample_gflops") is not None:
            line += f" {row['sample_gflops']:>13.2f}"
        elif "sample_note" in row:
            line += f"  (no run: {row['sample_note']})"
        print(line)
    if args.steps is not None:
        print(f"sampling run: {args.steps} {args.sampler} steps, guidance {args.guidance}"
              + (f", weak budget {args.weak_budget}" if args.weak_budget else "") + " (GFLOPs per image)")
    return 0
