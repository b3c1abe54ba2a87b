"""Sample an ELIT model at any budget: Euler / Heun on the rectified-flow ODE, with guidance.

    images = elit.sample(model, seeds=range(16), budget=4, steps=40, guidance="ccfg", scale=0.25)

Conventions: x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0, and the ODE
dx/dt = v is integrated from t = 1 (noise) to t = 0 (data) on a float64 grid. Image i starts from
`torch.randn` drawn by its own `torch.Generator().manual_seed(seed_i)` on the CPU, so an image
depends on its seed only, never on the batch size, the device or the other seeds.

Model calls: Euler makes `steps` velocity evaluations, Heun `2 * steps` (its correction is applied
at every step, including the last one into t = 0 where the velocity is still defined). A guided
evaluation runs one or two forward passes (see `elit.sampling.guidance`); `sampling_gflops` counts exactly
those passes.
"""
from __future__ import annotations

import torch

from elit.errors import UserError
from elit.flow.vp import VPSchedule
from elit.model.condition import TextCondition
from elit.sampling.cache import TeaCache
from elit.sampling.ddim import integrate_ddim
from elit.sampling.guidance import guided_velocity
from elit.sampling.plan import RunPlan, plan_run


# ---------------------------------------------------------------------- seeds, labels, noise
MAX_SEED = 2 ** 63 - 1   # torch.Generator.manual_seed takes a signed 64-bit seed
# Seeds of one call: a list of them is held in memory and in a sample folder's record (an FID needs 50k).
MAX_SEEDS = 1_000_000


def parse_seeds(seeds) -> list[int]:
    """'0-63', '0-9,20,30-32', an int list or a range -> strictly increasing non-negative ints."""
    if isinstance(seeds, str):
        out = []
        for part in seeds.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise UserError(f"cannot read seeds {seeds!r}: use e.g. '0-63' or '0-9,20,30-32'") from None
            if min(first, last) < 0:   # "0--3": a hint to swap the ends would name a negative seed
                raise UserError(f"seeds must be non-negative, got {part.strip()!r}")
            if last < first:
                raise UserError(f"seed range {part.strip()!r} is empty: write the smaller seed first, "
                                f"e.g. '{last}-{first}'")
            if last > MAX_SEED:
                raise UserError(f"seed {last} is too large; seeds must lie in 0..{MAX_SEED}")
            _check_count(len(out) + last - first + 1, seeds)   # before the list is built
            out.extend(range(first, last + 1))
        seeds = out
    elif isinstance(seeds, int):
        raise UserError("seeds must be a list or range of ints (one per image), e.g. range(16), not an int")
    if hasattr(seeds, "__len__"):
        _check_count(len(seeds), seeds)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("no seeds given")
    if any(s < 0 for s in seeds):
        raise UserError(f"seeds must be non-negative, got {min(seeds)}")
    if any(s > MAX_SEED for s in seeds):
        raise UserError(f"seed {max(seeds)} is too large; seeds must lie in 0..{MAX_SEED}")
    for a, b in zip(seeds, seeds[1:]):
        if b <= a:
            raise UserError(f"seeds must be strictly increasing without duplicates; {b} follows {a}")
    return seeds


def _check_count(count: int, seeds) -> None:
    if count > MAX_SEEDS:
        text = repr(seeds) if isinstance(seeds, str) else f"({type(seeds).__name__})"
        raise UserError(f"seeds {text} ask for {count:,} images; one call samples at most {MAX_SEEDS:,}: split "
                        f"the seeds over several calls (elit sample adds later seeds to the same --out folder)")


def default_labels(seeds: list[int], num_classes: int) -> list[int] | None:
    """The label of seed s is s % num_classes (so seeds 0..K-1 cover every class once)."""
    return None if num_classes == 0 else [s % num_classes for s in seeds]


def resolve_labels(labels, seeds: list[int], num_classes: int) -> list[int] | None:
    """None -> default_labels; an int -> that class for all; a list -> one per seed.

    `num_classes` itself (the null class) is allowed and samples unconditionally.
    """
    if num_classes == 0:
        if labels is not None:
            raise UserError("this model is unconditional (num_classes=0); do not pass labels")
        return None
    if labels is None:
        return default_labels(seeds, num_classes)
    if isinstance(labels, str):
        labels = [int(v) for v in labels.split(",")]
    if isinstance(labels, int):
        labels = [labels] * len(seeds)
    labels = [int(v) for v in labels]
    if len(labels) == 1:
        labels = labels * len(seeds)
    if len(labels) != len(seeds):
        raise UserError(f"{len(labels)} labels for {len(seeds)} seeds; give one label or one per seed")
    bad = [v for v in labels if not 0 <= v <= num_classes]
    if bad:
        raise UserError(f"labels must lie in 0..{num_classes - 1} (or {num_classes} = null class), got {bad[0]}")
    return labels


def initial_noise(seeds: list[int], shape: tuple, device=None) -> torch.Tensor:
    """(N, *shape) standard normal noise, image i drawn from its own generator seeded with seeds[i]."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).to(device)


# ---------------------------------------------------------------------- the ODE solvers
def integrate(velocity, x: torch.Tensor, plan: RunPlan, on_step=None) -> torch.Tensor:
    """Euler or Heun from t = 1 to t = 0; `velocity(x, t, budget)` is one guided evaluation;
    `on_step()` is called after each step (a progress bar)."""
    for i in range(plan.steps):
        t, t_next, budget = plan.times[i], plan.times[i + 1], plan.budgets[i]
        dt = t_next - t  # negative: time runs backwards
        v = velocity(x, t, budget)
        if plan.sampler == "euler":
            x = x + dt * v
        else:
            x_euler = x + dt * v
            x = x + dt * 0.5 * (v + velocity(x_euler, t_next, budget))
        if on_step is not None:
            on_step()
    return x


def _model_device_dtype(model):
    p = next(iter(model.parameters()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _condition(labels, device, dtype):
    """Labels (ints) -> a tensor; a TextCondition -> on the device, floats in the model's dtype."""
    if labels is None:
        return None
    if isinstance(labels, TextCondition):
        return labels.to(device, dtype)
    return torch.tensor(labels, dtype=torch.long, device=device)


def text_conditions(model, seeds: list[int], labels, negative):
    """A text model's per-seed conditions: one TextCondition per seed (or one for all)."""
    out = []
    for name, cond in (("labels", labels), ("negative", negative)):
        if cond is None and name == "negative":
            out.append(None)
            continue
        if not isinstance(cond, TextCondition):
            raise UserError(f"a text-to-image model samples from prompts: pass {name} = a TextCondition (the text "
                            f"encoder's output, one row per seed or one for all), got {type(cond).__name__}")
        if len(cond) == 1 and len(seeds) > 1:
            cond = cond.repeat(len(seeds))
        if len(cond) != len(seeds):
            raise UserError(f"{len(cond)} {name} prompts for {len(seeds)} seeds; give one or one per seed")
        out.append(cond)
    return out


@torch.no_grad()
def sample_batch(model, seeds: list[int], labels, plan: RunPlan, input_size: int | None = None,
                 negative=None, noise_schedule: str | None = None, on_step=None) -> torch.Tensor:
    """One batch: (N, C, H, W) float32 on the CPU, data space, not clamped. `labels`: ints, None or
    a TextCondition; `negative`: the unconditional input of cfg / ccfg (default: the model's null);
    `on_step()` is called after each denoising step (a progress bar)."""
    device, dtype = _model_device_dtype(model)
    x = initial_noise(seeds, model.sample_shape(input_size), device)
    y, null = _condition(labels, device, dtype), _condition(negative, device, dtype)
    if hasattr(model, "reset"):
        model.reset()  # a cache wrapper starts every trajectory fresh

    def velocity(x, t, budget):   # epsilon for ddim; only the first C channels are the prediction
        v = guided_velocity(model, x.to(dtype), t, y, budget, plan.guidance, plan.weak_budget, null)
        return v[:, : x.shape[1]].float()   # (learned-sigma checkpoints have 2C)

    if plan.sampler == "ddim":
        schedule = VPSchedule.for_model(model.config, noise_schedule)
        return integrate_ddim(velocity, x, plan, schedule, on_step).cpu()
    return integrate(velocity, x, plan, on_step).cpu()


def progress_bar(total_steps: int, desc: str):
    """A bar counting denoising steps (so it moves during a batch), one line per 30 s in a log file."""
    import sys

    from tqdm import tqdm
    return tqdm(total=total_steps, unit="step", desc=desc, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30)


def check_prediction(model, sampler: str) -> None:
    """Rectified-flow solvers need a velocity model; ddim an epsilon (discrete VP) model."""
    prediction = model.config.backbone.prediction
    if sampler == "ddim" and prediction != "epsilon":
        raise UserError(f"ddim samples discrete-VP epsilon models (converted DiT / U-ViT); this model predicts "
                        f"{prediction!r}: use sampler 'euler' or 'heun'")
    if sampler != "ddim" and prediction != "velocity":
        raise UserError(f"this model predicts {prediction!r} (a converted DiT or U-ViT), not a rectified-flow "
                         "velocity; sample it with sampler='ddim' (see docs/interop.md)")


def iter_batches(model, seeds, labels=None, batch_size: int = 64, input_size=None, progress=False,
                 negative=None, noise_schedule=None, **options):
    """Validate everything, then yield (seeds, labels, images) batch by batch (see `sample`).
    progress: False, True (a bar over every denoising step of every batch), or a bar to advance."""
    check_prediction(model, options.get("sampler", "euler"))
    seeds = parse_seeds(seeds)
    if model.config.condition == "text":
        labels, negative = text_conditions(model, seeds, labels, negative)
    else:
        if negative is not None:
            raise UserError("negative conditions are for text-to-image models; a class model's is its null class")
        labels = resolve_labels(labels, seeds, model.num_classes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be an integer >= 1, got {batch_size!r}")
    cache = options.pop("cache", None)
    plan = plan_run(model, **options)
    if cache is not None and not hasattr(cache, "reset"):
        cache = TeaCache(model, threshold=cache)
    runner = cache if cache is not None else model
    batches = -(-len(seeds) // batch_size)
    own = progress is True
    bar = progress_bar(batches * plan.steps, f"sampling {len(seeds)} images") if own else (progress or None)
    step = None if bar is None else (lambda: bar.update(1))
    try:
        for number, start in enumerate(range(0, len(seeds), batch_size), 1):
            s = seeds[start:start + batch_size]
            lab = None if labels is None else labels[start:start + batch_size]
            neg = None if negative is None else negative[start:start + batch_size]
            if own and batches > 1:
                bar.set_postfix_str(f"batch {number}/{batches}", refresh=False)
            yield s, lab, sample_batch(runner, s, lab, plan, input_size, neg, noise_schedule, step)
    finally:
        if own:
            bar.close()


def sample(model, seeds, labels=None, budget=None, steps: int = 40, sampler: str = "euler",
           guidance: str = "none", scale=None, w=None, weak_budget=None, schedule=None, interval=None,
           shift: float = 1.0, batch_size: int = 64, input_size: int | None = None, cache=None,
           progress=False, negative=None, noise_schedule: str | None = None) -> torch.Tensor:
    """Generate one image per seed: (N, C, H, W) float32 on the CPU, data space, no clamping.

    model: an ELITModel (or a wrapper with its signature, e.g. `elit.sampling.TeaCache`).
    seeds: ints (strictly increasing) or a string like '0-63'. labels: None (seed % num_classes),
        one int for all, or one per seed; `model.null_class_id` samples unconditionally. A
        text-to-image model takes a TextCondition instead (one row per seed, or one for all), and
        `negative`, the unconditional input of cfg / ccfg (default: the dropped caption).
    sampler: 'euler' | 'heun' (velocity models) | 'ddim' (converted epsilon models, DiT / U-ViT;
        `noise_schedule` 'linear' or 'scaled-linear', default by backbone: elit.flow.vp).
    budget: latents per group (int), a fraction of J (float) or None (full); or `schedule`, a rule
        string like '4@0.5,16' or a per-step list (see `elit.sampling.schedules`).
    guidance: 'none' | 'cfg' | 'ccfg' | 'ag' with `scale` = lambda (0 = none) or `w` = 1 + lambda;
        `weak_budget` for ccfg / ag (default: the lowest budget); `interval` = (lo, hi) in t.
    shift: time shift s (1 = uniform grid). cache: a TeaCache threshold (float) or object.
    progress: True for a bar over the denoising steps, or a tqdm bar to advance by one per step.
    """
    batches = iter_batches(model, seeds, labels, batch_size=batch_size, input_size=input_size, progress=progress,
                           steps=steps, sampler=sampler, budget=budget, schedule=schedule, guidance=guidance,
                           scale=scale, w=w, weak_budget=weak_budget, interval=interval, shift=shift, cache=cache,
                           negative=negative, noise_schedule=noise_schedule)
    return torch.cat([images for _, _, images in batches])
