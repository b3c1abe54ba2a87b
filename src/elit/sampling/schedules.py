"""Time grids and per-step budget schedules for the samplers.

Time runs from t = 1 (noise) to t = 0 (data) on a float64 grid of `steps + 1` points, optionally
warped by the time shift t' = s t / (1 + (s - 1) t) (s > 1 spends more steps at high noise).

Budget schedule syntax (a string):
    "16"            budget 16 at every step
    "4@0.5,16"      budget 4 while t > 0.5, then 16
    "1@0.8,4@0.4,full"  1 while t > 0.8, 4 while t > 0.4, then the full budget
Each segment is `BUDGET@T` ("use BUDGET while the step's start time t > T"), thresholds strictly
decreasing, and the last segment has no `@`. BUDGET is an int (latents per group), a float fraction
of J ("0.25") or "full". A step's budget is fixed by its *start* time t_i (after the shift); Heun's
second evaluation of that step uses the same budget. A list/tuple of per-step budgets (one per step)
is accepted too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from elit.errors import UserError



def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """`steps + 1` float64 times from 1 to 0, shifted by t' = s t / (1 + (s - 1) t)."""
    check_steps(steps)
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise UserError(f"time shift must be a positive number, got {shift!r}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return t.tolist()


def check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps!r}")


def parse_budget(text: str):
    """'16' -> 16, '0.25' -> 0.25, 'full' -> None (the model's full budget)."""
    s = text.strip().lower()
    if s in ("full", "none", ""):
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        raise UserError(f"cannot read budget {text!r}: use an int (latents per group), a fraction "
                         f"like 0.25, or 'full'") from None


@dataclass(frozen=True)
class BudgetSchedule:
    """Segments [(budget, t_threshold), ..., (budget, None)]: see the module docstring."""
    segments: tuple

    @classmethod
    def parse(cls, spec: str) -> "BudgetSchedule":
        segments, last_t = [], math.inf
        parts = [p for p in spec.split(",")]
        for i, part in enumerate(parts):
            budget_text, at, t_text = part.partition("@")
            if not at:
                if i != len(parts) - 1:
                    raise UserError(f"budget schedule {spec!r}: only the last segment may omit '@T' "
                                     f"(syntax: 'B@T,...,B', e.g. '4@0.5,16')")
                segments.append((parse_budget(budget_text), None))
                continue
            try:
                t = float(t_text)
            except ValueError:
                raise UserError(f"budget schedule {spec!r}: {t_text!r} is not a time in (0, 1)") from None
            if not 0.0 < t < 1.0 or t >= last_t:
                raise UserError(f"budget schedule {spec!r}: thresholds must lie in (0, 1) and decrease "
                                 f"strictly, got {t}")
            last_t = t
            segments.append((parse_budget(budget_text), t))
        if segments[-1][1] is not None:
            raise UserError(f"budget schedule {spec!r} must end with a plain budget (no '@'), "
                             f"e.g. '4@0.5,16'")
        return cls(tuple(segments))

    def budget_at(self, t: float):
        for budget, threshold in self.segments:
            if threshold is None or t > threshold:
                return budget
        raise AssertionError("unreachable: the last segment has no threshold")


def step_budgets(times: list[float], budget=None, schedule=None) -> list:
    """Unresolved budget of each step: the constant `budget`, or from `schedule` (string/list)."""
    steps = len(times) - 1
    if schedule is None:
        return [budget] * steps
    if budget is not None:
        raise UserError("give either a budget or a budget schedule, not both")
    if isinstance(schedule, str):
        rule = BudgetSchedule.parse(schedule)
        return [rule.budget_at(t) for t in times[:-1]]
    if isinstance(schedule, BudgetSchedule):
        return [schedule.budget_at(t) for t in times[:-1]]
    schedule = list(schedule)
    if len(schedule) != steps:
        raise UserError(f"a per-step budget list needs one budget per step ({steps}), got {len(schedule)}")
    return schedule
