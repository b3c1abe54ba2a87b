"""Speed against the code users would otherwise run: the authors' ELIT-SiT and facebookresearch DiT.

    python benchmarks/peer_codes.py --elit-checkout ~/src/elit --dit-checkout ~/src/DiT \
        [--model S|B] [--batch N] [--repeats N] [--threads N] [--only forward,train,sample]
        [--precision fp32|bf16|default]                      # like for like, or each code's own default
        [--json docs/performance-peers.json --key NAME]     # the figures for the docs' tables

Checkouts (nothing of them is copied into this repository; the script imports them from where
they are):
    git clone https://github.com/snap-research/elit        # --elit-checkout: models/sit_elit.py, ...
    git clone https://github.com/facebookresearch/DiT      # --dit-checkout: models.py

Three comparisons, each at equal configuration and equal weights, measured side by side in one
run (the two implementations alternate within every repeat; the median is reported):
  forward  our ELITModel in the authors' compatibility mode (`elit convert --from authors-elit`)
           vs their `models/sit_elit.py` SiTELIT, at every budget 1, 2, 4, ..., J latents per
           group. Their model picks its budget from `inference_budget` (a fraction k/J keeps k
           latents per window, `elit_utils/masking_strategies.py`).
  train    one training step, forward + backward + AdamW step, of our converted DiT
           (`elit convert --from dit`) vs their `models.py` DiT, on the same batch with the same
           loss code (MSE on the epsilon channels) around both models.
  sample   Euler, 40 steps, cheap CFG (conditional pass at the full budget, unconditional pass at
           the lowest budget), `elit.sample` vs their `elit_ccfg_inference.sample_single` (which
           calls `samplers.euler_sampler`).
  objective  not a speed test: their training loss (`loss.py` SILoss with the settings of their ELIT
           configs: prediction v, path linear, weighting lognormal) on their model against our
           `elit.flow.flow_loss` on the converted model, on the same batch with the same noise and
           times (theirs drawn by their code; ours given the same values), at every budget; and
           our TimeSampler (logit-normal(0, 1)) against their time draw from the same normals.

The reference models are built by their own constructors with a seeded random init, then every
trainable tensor is redrawn (seeded) so that no adaLN gate or output layer is zero (their init
zeroes them, and a model that outputs zeros checks nothing). Our models get the same weights
through `elit.interop.convert.convert_checkpoint`, and the max abs difference of the outputs is
printed next to each ratio. Ratio = reference time / our time: above 1 means we are faster.

timm: the reference codes import PatchEmbed, Attention and Mlp from
timm.models.vision_transformer. If timm is not installed, a small stand-in written here (same
parameter names and shapes, timm 1.0 semantics, fused SDPA attention like timm's default) is put
in sys.modules['timm...'] before their code is imported; the header says which was used.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import pathlib
import statistics
import subprocess
import sys
import time
import types

PARTS = ("forward", "train", "sample", "objective")
ELIT_REPO = "https://github.com/snap-research/elit"
DIT_REPO = "https://github.com/facebookresearch/DiT"
# Files each part needs from each checkout (relative to its root).
ELIT_FILES = {"forward": ("models/sit.py", "models/sit_elit.py", "elit_utils/token_editors.py",
                          "elit_utils/masking_strategies.py"),
              "sample": ("models/sit.py", "models/sit_elit.py", "elit_utils/token_editors.py",
                         "elit_utils/masking_strategies.py", "samplers.py", "elit_ccfg_inference.py"),
              "objective": ("models/sit.py", "models/sit_elit.py", "elit_utils/token_editors.py",
                            "elit_utils/masking_strategies.py", "loss.py", "dfm_utils/laplacian_decomposer.py")}
DIT_FILES = {"train": ("models.py",)}
SIZES = ("S", "B")
PRECISIONS = ("fp32", "bf16", "default")


class CheckoutError(Exception):
    """A checkout path that is missing or is not the expected repository."""


# ----------------------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="peer_codes.py", description=__doc__.split("\n")[0])
    ap.add_argument("--elit-checkout", type=pathlib.Path, default=None,
                    help=f"a checkout of snap-research/elit (git clone {ELIT_REPO})")
    ap.add_argument("--dit-checkout", type=pathlib.Path, default=None,
                    help=f"a checkout of facebookresearch/DiT (git clone {DIT_REPO})")
    ap.add_argument("--model", default="S", type=str.upper, choices=SIZES,
                    help="model size: ELIT-SiT-{S,B}/2 (forward, sample) and DiT-{S,B}/2 (train); default S")
    ap.add_argument("--batch", type=int, default=4, help="images per call (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement; median (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    ap.add_argument("--input-size", type=int, default=32, help="latent side (default 32 = 256px images)")
    ap.add_argument("--steps", type=int, default=40, help="sampling steps (default 40)")
    ap.add_argument("--cfg-scale", type=float, default=4.0,
                    help="their cfg_scale s = our w = 1 + lambda for the sample part (default 4.0)")
    ap.add_argument("--encoder-depth", type=int, default=None,
                    help="the authors' encoder_depth (their ELIT head length; train.py default 8, "
                         "which leaves S/B with 2 core blocks); default: the preset's")
    ap.add_argument("--compile", action="store_true",
                    help="our side with elit.compile_blocks (inductor), as a user who opts in would run it; "
                         "the reference stays eager (its code has no such path)")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="fp32: both in fp32; bf16: both under bf16 autocast (ours: the model's compute "
                         "precision, theirs: torch.autocast around their call); default: each code's own default "
                         "(ours: what --precision auto picks for this model here; theirs: fp32, as their "
                         "inference scripts and DiT's train.py run on a CPU). Default fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as a docs JSON entry (the form "
                    "scripts/docs_tables.py renders docs/performance-peers.md's tables from)")
    ap.add_argument("--key", help="with --json: store the entry under this key of PATH, its other entries kept")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        ap.error(f"--only takes a comma-separated subset of {','.join(PARTS)}, got {args.only!r}")
    args.only = [p for p in PARTS if p in parts]
    args.chosen = {}     # part -> {"ours": precision, "theirs": precision}, filled as the parts run
    for name in ("batch", "repeats", "threads", "input_size", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def check_checkout(path: pathlib.Path, files, flag: str, repo: str) -> pathlib.Path:
    """The checkout root, or a CheckoutError naming every missing file and how to get it."""
    root = pathlib.Path(path).expanduser()
    if not root.is_dir():
        raise CheckoutError(f"{flag} {path}: not a directory. Expected a checkout of {repo}: "
                            f"git clone {repo} {path}")
    missing = [str(root / rel) for rel in files if not (root / rel).is_file()]
    if missing:
        raise CheckoutError(f"{flag} {path}: {', '.join(missing)} not found. Expected a checkout of {repo}: "
                            f"git clone {repo} {path}")
    return root.resolve()


def plan_parts(args) -> tuple[list[str], list[str], dict]:
    """(parts to run, 'part (reason)' for each skipped one, {'elit': root, 'dit': root}).
    Raises CheckoutError for a checkout that is given but wrong."""
    roots, run, skipped = {}, [], []
    needs_elit = [p for p in args.only if p in ELIT_FILES]
    if args.elit_checkout is not None and needs_elit:
        files = list(dict.fromkeys(f for p in needs_elit for f in ELIT_FILES[p]))
        roots["elit"] = check_checkout(args.elit_checkout, files, "--elit-checkout", ELIT_REPO)
    if args.dit_checkout is not None and "train" in args.only:
        roots["dit"] = check_checkout(args.dit_checkout, DIT_FILES["train"], "--dit-checkout", DIT_REPO)
    for part in args.only:
        key, flag = ("dit", "--dit-checkout") if part == "train" else ("elit", "--elit-checkout")
        if key in roots:
            run.append(part)
        else:
            skipped.append(f"{part} (needs {flag})")
    return run, skipped, roots


# ----------------------------------------------------------------------------- output
def ratio_table(rows: list[dict], title: str) -> str:
    """rows: {'case', 'ref_s', 'ours_s', 'max_diff'} (medians), optionally 'ref_min', 'ours_min'
    -> a fixed-width table. ratio = reference / ours of the medians; 'of mins' = the same for the
    fastest repeat (less sensitive to other load on the machine)."""
    head = f"{'case':<28} {'reference (s)':>13} {'ours (s)':>10} {'ratio':>7} {'of mins':>8} {'max |diff|':>11}"
    lines = [title, head, "-" * len(head)]
    for r in rows:
        ratio = r["ref_s"] / r["ours_s"] if r["ours_s"] > 0 else float("inf")
        mins = (f"{r['ref_min'] / r['ours_min']:>7.2f}x" if r.get("ours_min") else f"{'-':>8}")
        lines.append(f"{r['case']:<28} {r['ref_s']:>13.4f} {r['ours_s']:>10.4f} {ratio:>6.2f}x {mins} "
                     f"{r['max_diff']:>11.2e}")
    return "\n".join(lines)


def doc_entry(args, figures: dict, J: int | None, layout: str | None, source: dict) -> dict:
    """The docs JSON entry of one run: per part its rows (medians, fastest repeats, max |diff|) with
    the two ratios the tables show (scripts/docs_tables.py `peer_rows` reads it)."""
    parts = {part: rows if part == "objective" else    # values, not timings
             [dict(r, ratio=r["ref_s"] / r["ours_s"], of_mins=r["ref_min"] / r["ours_min"]) for r in rows]
             for part, rows in figures.items()}
    return {"source": source, "model": args.model, "batch": args.batch, "repeats": args.repeats,
            "threads": args.threads, "compile": args.compile, "steps": args.steps, "layout": layout, "J": J,
            "precision": args.precision, "chosen": args.chosen, "parts": parts}


def git_commit(root: pathlib.Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git work tree)"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


# ----------------------------------------------------------------------------- timm stand-in
_STANDIN: dict = {}   # module name -> module, when timm is not installed


def install_timm_standin() -> str:
    """Use the real timm if it imports; else build our stand-in for the three layers the
    reference codes take from timm.models.vision_transformer (registered in sys.modules only
    while their code is imported, see `reference_imports`). Returns a description."""
    try:
        import timm.models.vision_transformer  # noqa: F401
        import timm
        return f"timm {timm.__version__} (installed)"
    except ImportError:
        pass
    import torch.nn as nn
    import torch.nn.functional as F

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    class PatchEmbed(nn.Module):
        """Image -> (B, tokens, dim) by a stride-p convolution (timm: proj, flatten, no norm)."""

        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm_layer=None,
                     flatten=True, bias=True, **_):
            super().__init__()
            self.img_size, self.patch_size = pair(img_size), pair(patch_size)
            self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
            self.num_patches = self.grid_size[0] * self.grid_size[1]
            self.flatten = flatten
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                                  bias=bias)
            self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

        def forward(self, x):
            x = self.proj(x)
            if self.flatten:
                x = x.flatten(2).transpose(1, 2)
            return self.norm(x)

    class Attention(nn.Module):
        """Multi-head self-attention with a fused qkv projection (timm's parameter names)."""

        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False, attn_drop=0.0, proj_drop=0.0,
                     norm_layer=nn.LayerNorm, **_):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.fused_attn = True
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
            self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            if self.fused_attn:
                x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
            else:
                a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
                x = self.attn_drop(a) @ v
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))

    class Mlp(nn.Module):
        """fc1 -> activation -> fc2 (timm's parameter names; dropout and norm are identities here)."""

        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                     norm_layer=None, bias=True, drop=0.0, **_):
            super().__init__()
            hidden_features = hidden_features or in_features
            out_features = out_features or in_features
            b1, b2 = pair(bias)
            self.fc1 = nn.Linear(in_features, hidden_features, bias=b1)
            self.act = act_layer()
            self.drop1 = nn.Dropout(pair(drop)[0])
            self.norm = norm_layer(hidden_features) if norm_layer else nn.Identity()
            self.fc2 = nn.Linear(hidden_features, out_features, bias=b2)
            self.drop2 = nn.Dropout(pair(drop)[1])

        def forward(self, x):
            return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))

    from importlib.machinery import ModuleSpec
    mods = {}
    for name in ("timm", "timm.models", "timm.models.vision_transformer"):
        mods[name] = types.ModuleType(name)
        mods[name].__spec__ = ModuleSpec(name, None)
    mods["timm"].__version__ = "stand-in"
    vt = mods["timm.models.vision_transformer"]
    vt.PatchEmbed, vt.Attention, vt.Mlp = PatchEmbed, Attention, Mlp
    mods["timm"].models, mods["timm.models"].vision_transformer = mods["timm.models"], vt
    _STANDIN.clear()
    _STANDIN.update(mods)
    return "stand-in (PatchEmbed, Attention, Mlp written in benchmarks/peer_codes.py; timm not installed)"


@contextlib.contextmanager
def reference_imports():
    """The timm stand-in (if any) is importable inside this block only, so other libraries
    (diffusers checks for timm) never see it."""
    added = [k for k in _STANDIN if k not in sys.modules]
    sys.modules.update({k: _STANDIN[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            sys.modules.pop(k, None)


# ----------------------------------------------------------------------------- reference imports
def import_authors(root: pathlib.Path):
    """Their modules, imported from the checkout (their own absolute imports need it on sys.path)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with contextlib.redirect_stdout(io.StringIO()), reference_imports():
        sit_elit = importlib.import_module("models.sit_elit")
        importlib.import_module("elit_utils.token_editors")
        importlib.import_module("elit_utils.masking_strategies")
    return sit_elit


def import_authors_ccfg(root: pathlib.Path):
    """(callable sampling one batch the way elit_ccfg_inference does, description).

    Their `sample_single` is imported from elit_ccfg_inference.py when it imports. That module also
    imports `utils.load_legacy_checkpoints` (only for --legacy checkpoints), whose module needs
    torchvision; if it does not import, a stub `utils` with that one name (raising if called) is
    registered. If the script still does not import (e.g. no diffusers / matplotlib / yaml), their
    `samplers.euler_sampler` is called with the exact keywords sample_single passes."""
    import torch
    import_authors(root)
    samplers = importlib.import_module("samplers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stubbed = ""
    try:
        with reference_imports():
            importlib.import_module("utils")
    except Exception as e:   # noqa: BLE001 - torchvision missing: stub the one name
        sys.modules.pop("utils", None)
        stub = types.ModuleType("utils")

        def load_legacy_checkpoints(*_, **__):
            raise RuntimeError("stub: the benchmark never loads legacy checkpoints")
        stub.load_legacy_checkpoints = load_legacy_checkpoints
        sys.modules["utils"] = stub
        stubbed = (f"; their utils.py did not import ({type(e).__name__}: {e}), so a stub `utils` holding "
                   f"load_legacy_checkpoints was registered")
    try:
        try:   # let diffusers look for timm before the stand-in exists
            importlib.import_module("diffusers.models")
        except Exception:  # noqa: BLE001 - reported by the import below
            pass
        with contextlib.redirect_stdout(io.StringIO()), reference_imports():
            ccfg = importlib.import_module("elit_ccfg_inference")
    except Exception as e:  # noqa: BLE001
        def run(model, z, y, a, cfg_scale, budget, uncond_budget):
            # The call elit_ccfg_inference.sample_single makes for --mode ode.
            return samplers.euler_sampler(
                model=model, latents=z, y=y, num_steps=a.num_steps, heun=a.heun, cfg_scale=cfg_scale,
                guidance_low=a.guidance_low, guidance_high=a.guidance_high, path_type=a.path_type,
                inference_budget=budget, unconditional_inference_budget=uncond_budget,
                autoguidance=False).to(torch.float32)
        return run, (f"driver: samplers.euler_sampler with the keywords of elit_ccfg_inference.sample_single "
                     f"(elit_ccfg_inference did not import: {type(e).__name__}: {e})")

    def run(model, z, y, a, cfg_scale, budget, uncond_budget):
        return ccfg.sample_single(model, z, y, a, z.device, cfg_scale=cfg_scale, inference_budget=budget,
                                  unconditional_inference_budget=uncond_budget, autoguidance=False)
    return run, "elit_ccfg_inference.sample_single (-> samplers.euler_sampler), imported from the checkout" + stubbed


def import_dit(root: pathlib.Path):
    """facebookresearch/DiT's models.py under a private module name (their `models` would clash
    with the authors' `models` package)."""
    spec = importlib.util.spec_from_file_location("peer_dit_models", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    with reference_imports():
        spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- weights
def redraw(model, seed: int) -> None:
    """Seeded random values for every trainable tensor: randn / sqrt(fan_in) for matrices (and
    conv kernels, tables), 0.5 randn for vectors. Frozen tensors (the sin-cos tables) stay."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if not p.requires_grad:
                continue
            std = p[0].numel() ** -0.5 if p.dim() >= 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)


def build_authors_elit(sit_elit, args):
    """(their SiTELIT, its constructor kwargs, our preset name) for --model at --input-size."""
    import torch
    from elit.interop import references as ref
    preset = f"ELIT-SiT-{args.model}/2-multibudget"
    _, kw, _ = ref.PRESETS[preset]
    kw = dict(kw, input_size=args.input_size)
    if args.encoder_depth is not None:
        kw["encoder_depth"] = args.encoder_depth
    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(io.StringIO()):  # their masking strategy prints its levels
        model = sit_elit.SiTELIT(**kw)
    redraw(model, args.seed + 1)
    return model.eval(), kw, preset


def convert(source: str, state: dict, kw: dict):
    from elit.interop.convert import convert_checkpoint
    return convert_checkpoint(source, {k: v.detach().clone() for k, v in state.items()}, config=kw).eval()


# ----------------------------------------------------------------------------- timing
def maybe_compile(model, args):
    """--compile: our repeated blocks through inductor; compiled at the first (untimed) call."""
    if args.compile:
        from elit.model import compile_blocks
        compile_blocks(model)
    return model


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: (median, min) seconds}; within a repeat every callable runs once, the order alternating."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - start)
    return {n: (statistics.median(v), min(v)) for n, v in times.items()}


def timing(med: dict) -> dict:
    return dict(ref_s=med["ref"][0], ours_s=med["ours"][0], ref_min=med["ref"][1], ours_min=med["ours"][1])


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# ----------------------------------------------------------------------------- precision
def choose_precisions(args, ours, part: str) -> tuple[str, str]:
    """(ours, theirs) for --precision in `part`; sets our model's compute precision and records the
    pair in args.chosen (the docs entry keeps it, so a table says what each side ran)."""
    from elit._precision import probe_speedup, resolve_precision
    if args.precision == "default":
        # `elit sample --precision auto` times this model at this batch; `elit train` does not probe
        probe = None if part == "train" else (lambda: probe_speedup(ours, args.batch))
        mine = resolve_precision("auto", "cpu", probe, announce=lambda text: print(f"  ours ({part}): {text}"))
        theirs = "fp32"
    else:
        mine = theirs = args.precision
    ours.compute_precision = mine
    args.chosen[part] = {"ours": mine, "theirs": theirs}
    return mine, theirs


def under(precision: str, fn):
    """`fn`, run under CPU bf16 autocast when `precision` is bf16: how their code runs in bf16."""
    import torch
    if precision != "bf16":
        return fn

    def run(*a, **k):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*a, **k)
    return run


# ----------------------------------------------------------------------------- parts
def part_forward(args, ref_model, ours, J) -> str:
    import torch
    from elit.interop.convert import authors_budget_to_ours
    g = torch.Generator().manual_seed(args.seed + 2)
    B, S = args.batch, args.input_size
    x = torch.randn(B, 4, S, S, generator=g)
    t = torch.rand(B, generator=g)
    y = torch.randint(0, 1000, (B,), generator=g)
    budgets = sorted({min(2 ** i, J) for i in range(J.bit_length() + 1)})
    rows = []
    mine, theirs = choose_precisions(args, ours, "forward")
    ref = under(theirs, ref_model)
    with torch.no_grad():
        for k in budgets:
            b = k / J
            assert authors_budget_to_ours(b, ours) == k, (b, k)
            diff = max_diff(ref(x, t, y=y, inference_budget=b)[0], ours(x, t, y, budget=k))
            med = interleaved({"ref": lambda: ref(x, t, y=y, inference_budget=b),
                               "ours": lambda: ours(x, t, y, budget=k)}, args.repeats)
            rows.append(dict(case=f"{k:>2}/{J} latents (b={b:g})", latents=k, **timing(med),
                             max_diff=diff))
    title = (f"[forward] no-grad forward, batch {B}, input {S}x{S}, median of {args.repeats}; "
             f"their SiTELIT(..., inference_budget=k/J) in {theirs} vs our model(..., budget=k) in {mine}")
    return title, rows


def part_train(args, dit_mod) -> str:
    import torch
    import torch.nn.functional as F
    from elit.interop import references as ref
    preset = f"DiT-{args.model}/2"
    _, kw, _ = ref.PRESETS[preset]
    kw = dict(kw, input_size=args.input_size)
    torch.manual_seed(args.seed)
    theirs = dit_mod.DiT(**kw)
    redraw(theirs, args.seed + 3)
    ours = maybe_compile(convert("dit", theirs.state_dict(), kw), args)
    mine, their_precision = choose_precisions(args, ours, "train")
    their_forward = under(their_precision, theirs)
    g = torch.Generator().manual_seed(args.seed + 4)
    B, S, C = args.batch, args.input_size, theirs.in_channels
    x = torch.randn(B, C, S, S, generator=g)
    steps = torch.randint(0, 1000, (B,), generator=g)
    y = torch.randint(0, 1000, (B,), generator=g)
    target = torch.randn(B, C, S, S, generator=g)
    theirs.eval()
    with torch.no_grad():
        diff = max_diff(their_forward(x, steps.float(), y), ours(x, steps.float() / 1000, y))
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    theirs.train()
    ours.train()
    # DiT's train.py: AdamW(lr=1e-4, weight_decay=0). The same step code wraps both models.
    opt_t = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-4, weight_decay=0)
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-4, weight_decay=0)

    def step(forward, opt, t_in):
        opt.zero_grad(set_to_none=True)
        out = forward(x, t_in, y)
        F.mse_loss(out[:, :C].float(), target).backward()
        opt.step()

    t_ref, t_ours = steps.float(), steps.float() / 1000
    med = interleaved({"ref": lambda: step(their_forward, opt_t, t_ref), "ours": lambda: step(ours, opt_o, t_ours)},
                      args.repeats)
    rows = [dict(case=f"{preset} train step", **timing(med), max_diff=diff)]
    title = (f"[train] forward + MSE(eps channels) + backward + AdamW step, batch {B}, input {S}x{S}, theirs in "
             f"{their_precision}, ours in {mine}, median of "
             f"{args.repeats}; trainable parameters: theirs {n_theirs:,}, ours {n_ours:,}; max |diff| = eval "
             f"forward at equal weights before training")
    return title, rows


def part_sample(args, root, ref_model, ours, J) -> str:
    import torch
    import elit
    from elit.sampling import initial_noise
    run_theirs, how = import_authors_ccfg(root)
    B, S = args.batch, args.input_size
    seeds = list(range(B))
    labels = [(7 * s + 3) % 1000 for s in seeds]
    z = initial_noise(seeds, (4, S, S))
    y = torch.tensor(labels)
    a = argparse.Namespace(num_steps=args.steps, heun=False, guidance_low=0.0, guidance_high=1.0,
                           path_type="linear", mode="ode")
    uncond_b = 1 / J
    mine_p, theirs_p = choose_precisions(args, ours, "sample")
    run_theirs = under(theirs_p, run_theirs)

    def theirs():
        return run_theirs(ref_model, z, y, a, args.cfg_scale, 1.0, uncond_b)

    def mine():
        return elit.sample(ours, seeds, labels=labels, budget=None, steps=args.steps, sampler="euler",
                           guidance="ccfg", w=args.cfg_scale, weak_budget=1, batch_size=B)

    diff = max_diff(theirs(), mine())
    reps = args.repeats
    med = interleaved({"ref": theirs, "ours": mine}, reps, warmup=0)
    rows = [dict(case=f"Euler {args.steps} steps, CCFG", **timing(med), max_diff=diff)]
    title = (f"[sample] theirs in {theirs_p}, ours in {mine_p}, batch {B}, input {S}x{S}, cond pass at {J}/{J} latents, uncond (null class) at 1/{J}, "
             f"s = w = {args.cfg_scale:g}, median of {reps}\n  theirs: {how}\n  ours: elit.sample(guidance='ccfg', "
             f"w={args.cfg_scale:g}, weak_budget=1)")
    return title, rows


def part_objective(args, root, ref_model, ours, J):
    """(title, rows): per budget, their per-sample loss and ours on the same x0, y, noise and t, and
    the largest difference; a last row compares the time draws themselves."""
    import torch
    from elit.flow.objective import TimeSampler, flow_loss
    ours.compute_precision = "fp32"     # a check of values at 1e-5, whatever --precision times
    stubbed = ""
    try:
        with reference_imports():
            importlib.import_module("dfm_utils.laplacian_decomposer")
    except ImportError as e:   # it needs torchvision; only their DFM loss uses it, not SILoss
        stub = types.ModuleType("dfm_utils.laplacian_decomposer")

        class LaplacianDecomposer2D:
            def __init__(self, *_, **__):
                raise RuntimeError("stub: the benchmark never builds their DFM loss")
        stub.LaplacianDecomposer2D = LaplacianDecomposer2D
        sys.modules[stub.__name__] = stub
        stubbed = f" (their dfm_utils.laplacian_decomposer did not import: {e}; a stub stands in, unused by SILoss)"
    with contextlib.redirect_stdout(io.StringIO()), reference_imports():
        their_loss = importlib.import_module("loss")
    # Their ELIT configs (experiments/train/elit_sit_xl_*.yaml): prediction v, path_type linear,
    # weighting lognormal (sigma = exp(N(0, 1)), t = sigma / (1 + sigma)), proj_coeff 0 (no REPA).
    loss_fn = their_loss.SILoss(prediction="v", path_type="linear", weighting="lognormal")
    g = torch.Generator().manual_seed(args.seed + 3)
    B, S = args.batch, args.input_size
    x0 = torch.randn(B, 4, S, S, generator=g)
    y = torch.randint(0, 1000, (B,), generator=g)
    rows = []
    with torch.no_grad():
        for k in sorted({min(2 ** i, J) for i in range(J.bit_length() + 1)}):
            torch.manual_seed(args.seed + 4)       # their loss draws t, then the noise, from torch's global RNG
            theirs, _ = loss_fn(ref_model, x0, dict(y=y, inference_budget=k / J))
            torch.manual_seed(args.seed + 4)       # the same draws, replayed for our side
            sigma = torch.randn(B, 1, 1, 1).exp()
            t = (sigma / (1 + sigma)).flatten()
            eps = torch.randn_like(x0)
            mine = flow_loss(ours, x0, y, t, eps, budget=k)
            rows.append(dict(case=f"loss at {k:>2}/{J} latents", theirs=theirs.mean().item(), ours=mine.mean().item(),
                             max_diff=max_diff(theirs, mine), relative=max_diff(theirs, mine) / theirs.abs().max().item()))
        torch.manual_seed(args.seed + 4)
        sigma = torch.randn(4096).exp()
        ours_t = TimeSampler("logit_normal", 0.0, 1.0)(4096, torch.Generator().manual_seed(args.seed + 4))
        diff = max_diff(sigma / (1 + sigma), ours_t)
        rows.append(dict(case="t draws (4096 normals)", theirs=(sigma / (1 + sigma)).mean().item(),
                         ours=ours_t.mean().item(), max_diff=diff, relative=diff))
    title = (f"[objective] per-sample rectified-flow loss, batch {B}, input {S}x{S}: their loss.py SILoss(v, linear, "
             f"lognormal) on SiTELIT(inference_budget=k/J) vs our flow_loss(model, budget=k), same x0/y/noise/t" + stubbed)
    return title, rows


def objective_table(rows: list[dict], title: str) -> str:
    head = f"{'case':<26} {'theirs (mean)':>14} {'ours (mean)':>12} {'max |diff|':>11} {'relative':>9}"
    lines = [title, head, "-" * len(head)]
    lines += [f"{r['case']:<26} {r['theirs']:>14.6f} {r['ours']:>12.6f} {r['max_diff']:>11.2e} {r['relative']:>9.1e}"
              for r in rows]
    worst = max(r["relative"] for r in rows)
    lines.append(f"objective parity: {'PASS' if worst <= 1e-5 else 'FAIL'} (largest relative difference {worst:.1e}, "
                 f"tolerance 1e-5)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run, skipped, roots = plan_parts(args)
    except CheckoutError as e:
        print(f"peer_codes.py: {e}", file=sys.stderr)
        return 2
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings
    import torch
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    # Their Read/Write attention enters torch.backends.cuda.sdp_kernel() at every call (deprecated).
    warnings.filterwarnings("ignore", message=".*sdp_kernel.*", category=FutureWarning)
    print(f"peer_codes: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"1-min load average {load_average()}, {os.cpu_count()} CPUs, model size {args.model}, batch {args.batch}"
          + (", ours with elit.compile_blocks" if args.compile else ", both eager") + f", precision {args.precision}")
    for key, repo in (("elit", "snap-research/elit"), ("dit", "facebookresearch/DiT")):
        if key in roots:
            print(f"  {repo}: {roots[key]} (commit {git_commit(roots[key])})")
    if skipped:
        print("skipped: " + ", ".join(skipped))
    if not run:
        print("nothing to run: give --elit-checkout (forward, sample) and/or --dit-checkout (train)")
        return 0
    print(f"  timm: {install_timm_standin()}")
    ref_model = ours = None
    J = layout = None
    if {"forward", "sample", "objective"} & set(run):
        sit_elit = import_authors(roots["elit"])
        ref_model, kw, preset = build_authors_elit(sit_elit, args)
        ours = maybe_compile(convert("authors-elit", ref_model.state_dict(), kw), args)
        J = ours.latents_per_group
        head, core, tail = (len(part) for part in ours.config.layout())
        layout = f"{head}/{core}/{tail}"
        print(f"  ELIT model: {preset} kwargs at input {args.input_size} (encoder_depth={kw['encoder_depth']}, "
              f"group_size={kw['group_size']}): head/core/tail = {head}/{core}/{tail} blocks, J = {J}")
    figures = {}
    for part in run:
        if part == "forward":
            title, rows = part_forward(args, ref_model, ours, J)
        elif part == "train":
            title, rows = part_train(args, import_dit(roots["dit"]))
        elif part == "objective":
            title, rows = part_objective(args, roots["elit"], ref_model, ours, J)
            figures[part] = rows
            print("\n" + objective_table(rows, title), flush=True)
            continue
        else:
            title, rows = part_sample(args, roots["elit"], ref_model, ours, J)
        figures[part] = rows
        print("\n" + ratio_table(rows, title), flush=True)
    print(f"\nratio = reference time / our time (> 1: we are faster); 1-min load average at the end "
          f"{load_average()}")
    if args.json:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
        import docs_tables     # the generator owns the docs JSON's layout
        entry = doc_entry(args, figures, J, layout, docs_tables.measured_source(load_before, args.threads))
        docs_tables.write_entry(args.json, entry, args.key)
        print(f"figures: {args.json}" + (f" [{args.key}]" if args.key else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
