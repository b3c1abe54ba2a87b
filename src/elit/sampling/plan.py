"""A sampling run, resolved and validated before any compute: time grid, budget of every step,
guidance and its weak budget; and what it costs (`sampling_gflops` counts exactly the forward
passes the solvers make)."""
from __future__ import annotations

from dataclasses import dataclass

from elit.cost import analytic_gflops
from elit.errors import UserError
from elit.model import BudgetSpace, ModelConfig
from elit.sampling.guidance import Guidance, check_budgets, make_guidance, pass_budgets, resolve_weak_budget
from elit.sampling.schedules import check_steps, step_budgets, time_grid

SAMPLERS = ("euler", "heun", "ddim")   # ddim: converted epsilon models (sampling/ddim.py)


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


def budget_space_of(model_or_space) -> BudgetSpace:
    """A model's (or config's) budget space; a BudgetSpace is returned as is."""
    space = model_or_space if isinstance(model_or_space, BudgetSpace) else getattr(model_or_space, "budget_space", None)
    if not isinstance(space, BudgetSpace):
        raise TypeError(f"expected an elit model, ModelConfig or BudgetSpace, got {type(model_or_space).__name__}")
    return space


def plan_run(model_or_config, *, steps=40, sampler="euler", budget=None, schedule=None, guidance="none",
             scale=None, w=None, weak_budget=None, interval=None, shift=1.0) -> RunPlan:
    """Validate the options against a model (or its ModelConfig): its budgets, and guidance against
    what it is conditioned on; resolve every budget."""
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"plan_run takes an elit model or ModelConfig, got {type(model_or_config).__name__}")
    space, conditional = config.budget_space, config.conditional
    check_steps(steps)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    g = guidance if isinstance(guidance, Guidance) else make_guidance(guidance, scale, w, weak_budget, interval)
    if g.mode in ("cfg", "ccfg") and not conditional:
        raise UserError(f"{g.mode} needs a class-conditional or text-conditional model (a null class or a "
                         f"caption to drop); this one is unconditional: use ag or none")
    times = time_grid(steps, shift)
    budgets = [space.resolve(b) for b in step_budgets(times, budget, schedule)]
    weak = resolve_weak_budget(g, space.budgets, space.resolve)
    check_budgets(g, budgets, weak)
    return RunPlan(sampler, times, budgets, g, weak)


def sampling_gflops(config, steps, budget=None, guidance="none", weak_budget=None, schedule=None,
                    sampler="euler", interval=None, input_size=None, scale=None, shift=1.0) -> float:
    """GFLOPs (2 x multiply-adds) per image of a whole sampling run, from `elit.cost.analytic_gflops`.

    Counts exactly the forward passes the sampler makes (Heun's 2 evaluations per step, one pass
    outside the guidance interval). `scale=None` means "guidance on"; `scale=0` counts no guidance,
    as the sampler then skips the weak pass. TeaCache skips are not counted (unknown in advance).
    """
    if guidance not in (None, "none") and scale is None:
        scale = 1.0  # any non-zero lambda: the cost does not depend on its value
    if input_size is not None and input_size != config.backbone.input_size:
        # As analytic_gflops: the cost of the model built for that size (its window and J follow it).
        config = config.with_input_size(input_size)
    plan = plan_run(config, steps=steps, sampler=sampler, budget=budget, schedule=schedule,
                    guidance=guidance, scale=scale, weak_budget=weak_budget, interval=interval, shift=shift)
    return plan_gflops(config, plan, input_size)


def plan_gflops(config, plan: RunPlan, input_size: int | None = None) -> float:
    """GFLOPs per image of every forward pass `plan` makes (analytic, 2 x multiply-adds)."""
    per_budget = {}
    for b in plan.forward_passes():
        if b not in per_budget:
            per_budget[b] = analytic_gflops(config, b, input_size)
    return float(sum(per_budget[b] for b in plan.forward_passes()))


