"""DDIM (eta = 0, deterministic) for converted discrete-VP epsilon models (DiT, U-ViT), so a
teacher can be sampled beside its ELIT student from the same seeds (the same initial noise).

Steps: the run's time grid t_0 = 1 > ... > t_{n-1} (shifted like the rectified-flow grids) maps to
integer steps s_i = round(t_i (T - 1)) ("trailing" spacing: the first step is T - 1, pure noise
for practical purposes); the model is fed t = s_i / T (how converted models take time). Update,
with abar the schedule's cumulative alphas and abar_prev = abar(s_{i+1}) (1 after the last step):

    x0  = (x - sqrt(1 - abar) eps) / sqrt(abar)
    x  <- sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps

Guidance (cfg / ccfg / ag) combines the epsilons with the same formulas as velocities. A
learned-sigma model's extra output channels are ignored.
"""
from __future__ import annotations

import torch

from elit.errors import UserError
from elit.flow.vp import VPSchedule


def ddim_steps(times: list[float], schedule: VPSchedule) -> list[int]:
    """Integer VP steps of a run's time grid (its first len - 1 points)."""
    T = schedule.steps
    steps = [int(round(t * (T - 1))) for t in times[:-1]]
    if any(b >= a for a, b in zip(steps, steps[1:])):
        raise UserError(f"{len(steps)} DDIM steps do not fit the schedule's {T} steps (or the time shift "
                        f"squeezes two onto one step); use fewer steps")
    return steps


def ddim_update(x: torch.Tensor, eps: torch.Tensor, abar: float, abar_prev: float) -> torch.Tensor:
    x0 = (x - (1 - abar) ** 0.5 * eps) / abar ** 0.5
    return abar_prev ** 0.5 * x0 + (1 - abar_prev) ** 0.5 * eps


def integrate_ddim(epsilon, x: torch.Tensor, plan, schedule: VPSchedule, on_step=None) -> torch.Tensor:
    """`epsilon(x, t, budget)` is one guided evaluation (t = step / T); returns the sample.
    `on_step()` is called after each step (a progress bar)."""
    steps = ddim_steps(plan.times, schedule)
    abar = schedule.alphas_cumprod.tolist()
    C = x.shape[1]
    for i, s in enumerate(steps):
        eps = epsilon(x, s / schedule.steps, plan.budgets[i])[:, :C]
        prev = abar[steps[i + 1]] if i + 1 < len(steps) else 1.0
        x = ddim_update(x, eps, abar[s], prev)
        if on_step is not None:
            on_step()
    return x
