"""Sample an ELIT model at any budget: Euler / Heun on the rectified-flow ODE, with guidance.

    images = elit.sample(model, seeds=range(16), budget=4, steps=40, guidance="ccfg", scale=0.25)

Conventions: x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0, and the ODE
dx/dt = v is integrated from t = 1 (noise) to t = 0 (data) on a float64 grid. Image i starts from
`torch.randn` drawn by its own `torch.Generator().manual_seed(seed_i)` on the CPU, so an image
depends on its seed only, never on the batch size, the device or the other seeds.

Model calls: Euler makes `steps` velocity evaluations, Heun `2 * steps` (its correction is applied
at every step, including the last one into t = 0 where the velocity is still defined). A guided
evaluation runs one or two forward passes (see `elit.guidance`); `sampling_gflops` counts exactly
those passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from elit.guidance import Guidance, check_budgets, guided_velocity, make_guidance, pass_budgets, resolve_weak_budget
from elit.sampling_schedule import ConfigBudgets, check_steps, step_budgets, time_grid

SAMPLERS = ("euler", "heun")


@dataclass(frozen=True)
class RunPlan:
    """Everything a sampling run does, resolved and validated before any compute."""
    sampler: str
    times: list            # float64 grid, steps + 1 points from 1 to 0
    budgets: list          # resolved budget of each step
    guidance: Guidance
    weak_budget: object    # resolved weak budget (ccfg / ag) or None

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def evaluations(self):
        """(t, budget) of every velocity evaluation, in order."""
        for i in range(self.steps):
            yield self.times[i], self.budgets[i]
            if self.sampler == "heun":
                yield self.times[i + 1], self.budgets[i]

    def forward_passes(self) -> list:
        """Budget of every forward pass (per image) the run makes, in order."""
        return [b for t, budget in self.evaluations()
                for b in pass_budgets(self.guidance, t, budget, self.weak_budget)]

    def describe(self) -> str:
        names = ["full" if b is None else str(b) for b in self.budgets]
        budget = names[0] if len(set(names)) == 1 else "schedule " + ",".join(names)
        text = f"{self.sampler} {self.steps} steps, budget {budget}, guidance {self.guidance.describe()}"
        if self.guidance.enabled and self.weak_budget is not None:
            text += f", weak budget {self.weak_budget}"
        return text


def plan_run(budget_rules, *, steps=40, sampler="euler", budget=None, schedule=None, guidance="none",
             scale=None, w=None, weak_budget=None, interval=None, shift=1.0,
             conditional: bool = True) -> RunPlan:
    """Validate the options against a model (or `ConfigBudgets`) and resolve every budget."""
    check_steps(steps)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    g = guidance if isinstance(guidance, Guidance) else make_guidance(guidance, scale, w, weak_budget, interval)
    if g.mode in ("cfg", "ccfg") and not conditional:
        raise ValueError(f"{g.mode} needs a class-conditional model (with a null class); this one is "
                         f"unconditional: use ag or none")
    times = time_grid(steps, shift)
    budgets = [budget_rules.resolve_budget(b) for b in step_budgets(times, budget, schedule)]
    weak = resolve_weak_budget(g, budget_rules.budgets, budget_rules.resolve_budget)
    check_budgets(g, budgets, weak)
    return RunPlan(sampler, times, budgets, g, weak)


def sampling_gflops(config, steps, budget=None, guidance="none", weak_budget=None, schedule=None,
                    sampler="euler", interval=None, input_size=None, scale=None, shift=1.0) -> float:
    """GFLOPs (2 x multiply-adds) per image of a whole sampling run, from `elit.flops.analytic_gflops`.

    Counts exactly the forward passes the sampler makes (Heun's 2 evaluations per step, one pass
    outside the guidance interval). `scale=None` means "guidance on"; `scale=0` counts no guidance,
    as the sampler then skips the weak pass. TeaCache skips are not counted (unknown in advance).
    """
    if guidance not in (None, "none") and scale is None:
        scale = 1.0  # any non-zero lambda: the cost does not depend on its value
    if input_size is not None and input_size != config.input_size:
        # As analytic_gflops: the cost of the model built for that size (its window and J follow it).
        config = type(config).from_dict({**config.to_dict(), "input_size": input_size})
    plan = plan_run(ConfigBudgets(config), steps=steps, sampler=sampler, budget=budget, schedule=schedule,
                    guidance=guidance, scale=scale, weak_budget=weak_budget, interval=interval, shift=shift,
                    conditional=config.num_classes > 0)
    return plan_gflops(config, plan, input_size)


def plan_gflops(config, plan: RunPlan, input_size: int | None = None) -> float:
    """GFLOPs per image of every forward pass `plan` makes (analytic, 2 x multiply-adds)."""
    from elit.flops import analytic_gflops
    per_budget = {}
    for b in plan.forward_passes():
        if b not in per_budget:
            per_budget[b] = analytic_gflops(config, b, input_size)
    return float(sum(per_budget[b] for b in plan.forward_passes()))


# ---------------------------------------------------------------------- seeds, labels, noise
def parse_seeds(seeds) -> list[int]:
    """'0-63', '0-9,20,30-32', an int list or a range -> strictly increasing non-negative ints."""
    if isinstance(seeds, str):
        out = []
        for part in seeds.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
            except ValueError:
                raise ValueError(f"cannot read seeds {seeds!r}: use e.g. '0-63' or '0-9,20,30-32'") from None
        seeds = out
    elif isinstance(seeds, int):
        raise ValueError("seeds must be a list or range of ints (one per image), e.g. range(16), not an int")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds given")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative, got {min(seeds)}")
    for a, b in zip(seeds, seeds[1:]):
        if b <= a:
            raise ValueError(f"seeds must be strictly increasing without duplicates; {b} follows {a}")
    return seeds


def default_labels(seeds: list[int], num_classes: int) -> list[int] | None:
    """The label of seed s is s % num_classes (so seeds 0..K-1 cover every class once)."""
    return None if num_classes == 0 else [s % num_classes for s in seeds]


def resolve_labels(labels, seeds: list[int], num_classes: int) -> list[int] | None:
    """None -> default_labels; an int -> that class for all; a list -> one per seed.

    `num_classes` itself (the null class) is allowed and samples unconditionally.
    """
    if num_classes == 0:
        if labels is not None:
            raise ValueError("this model is unconditional (num_classes=0); do not pass labels")
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
        raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds; give one label or one per seed")
    bad = [v for v in labels if not 0 <= v <= num_classes]
    if bad:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (or {num_classes} = null class), got {bad[0]}")
    return labels


def initial_noise(seeds: list[int], shape: tuple, device=None) -> torch.Tensor:
    """(N, *shape) standard normal noise, image i drawn from its own generator seeded with seeds[i]."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).to(device)


# ---------------------------------------------------------------------- the ODE solvers
def integrate(velocity, x: torch.Tensor, plan: RunPlan) -> torch.Tensor:
    """Euler or Heun from t = 1 to t = 0; `velocity(x, t, budget)` is one guided evaluation."""
    for i in range(plan.steps):
        t, t_next, budget = plan.times[i], plan.times[i + 1], plan.budgets[i]
        dt = t_next - t  # negative: time runs backwards
        v = velocity(x, t, budget)
        if plan.sampler == "euler":
            x = x + dt * v
        else:
            x_euler = x + dt * v
            x = x + dt * 0.5 * (v + velocity(x_euler, t_next, budget))
    return x


def _model_device_dtype(model):
    p = next(iter(model.parameters()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


@torch.no_grad()
def sample_batch(model, seeds: list[int], labels: list[int] | None, plan: RunPlan,
                 input_size: int | None = None) -> torch.Tensor:
    """One batch: (N, C, H, W) float32 on the CPU, data space, not clamped."""
    cfg = model.config
    size = input_size or cfg.input_size
    device, dtype = _model_device_dtype(model)
    x = initial_noise(seeds, (cfg.in_channels, size, size), device)
    y = None if labels is None else torch.tensor(labels, dtype=torch.long, device=device)
    if hasattr(model, "reset"):
        model.reset()  # a cache wrapper starts every trajectory fresh

    def velocity(x, t, budget):
        v = guided_velocity(model, x.to(dtype), t, y, budget, plan.guidance, plan.weak_budget, model.null_class_id)
        return v.float()

    return integrate(velocity, x, plan).cpu()


def iter_batches(model, seeds, labels=None, batch_size: int = 64, input_size=None, progress=False, **options):
    """Validate everything, then yield (seeds, labels, images) batch by batch (see `sample`)."""
    if getattr(model.config, "prediction", "velocity") != "velocity":
        raise ValueError(f"this model predicts {model.config.prediction!r} (a converted DiT), not a rectified-flow "
                         "velocity; the rectified-flow samplers do not apply to it (see docs/interop.md)")
    seeds = parse_seeds(seeds)
    labels = resolve_labels(labels, seeds, model.config.num_classes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {batch_size!r}")
    cache = options.pop("cache", None)
    plan = plan_run(model, conditional=model.config.num_classes > 0, **options)
    if cache is not None and not hasattr(cache, "reset"):
        from elit.caching import TeaCache
        cache = TeaCache(model, threshold=cache)
    runner = cache if cache is not None else model
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(seeds), unit="img", desc="sampling")
    try:
        for start in range(0, len(seeds), batch_size):
            s = seeds[start:start + batch_size]
            lab = None if labels is None else labels[start:start + batch_size]
            images = sample_batch(runner, s, lab, plan, input_size)
            if bar is not None:
                bar.update(len(s))
            yield s, lab, images
    finally:
        if bar is not None:
            bar.close()


def sample(model, seeds, labels=None, budget=None, steps: int = 40, sampler: str = "euler",
           guidance: str = "none", scale=None, w=None, weak_budget=None, schedule=None, interval=None,
           shift: float = 1.0, batch_size: int = 64, input_size: int | None = None, cache=None,
           progress: bool = False) -> torch.Tensor:
    """Generate one image per seed: (N, C, H, W) float32 on the CPU, data space, no clamping.

    model: an ELITModel (or a wrapper with its signature, e.g. `elit.caching.TeaCache`).
    seeds: ints (strictly increasing) or a string like '0-63'. labels: None (seed % num_classes),
        one int for all, or one per seed; `model.null_class_id` samples unconditionally.
    budget: latents per group (int), a fraction of J (float) or None (full); or `schedule`, a rule
        string like '4@0.5,16' or a per-step list (see `elit.sampling_schedule`).
    guidance: 'none' | 'cfg' | 'ccfg' | 'ag' with `scale` = lambda (0 = none) or `w` = 1 + lambda;
        `weak_budget` for ccfg / ag (default: the lowest budget); `interval` = (lo, hi) in t.
    shift: time shift s (1 = uniform grid). cache: a TeaCache threshold (float) or object.
    """
    batches = iter_batches(model, seeds, labels, batch_size=batch_size, input_size=input_size, progress=progress,
                           steps=steps, sampler=sampler, budget=budget, schedule=schedule, guidance=guidance,
                           scale=scale, w=w, weak_budget=weak_budget, interval=interval, shift=shift, cache=cache)
    return torch.cat([images for _, _, images in batches])
