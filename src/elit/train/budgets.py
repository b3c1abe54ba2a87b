"""Which budget (latents kept per group) each training step uses.

Multi-budget training draws J~ ~ Uniform{lo..hi} once per step. The draw is a pure function of
(seed, step): every rank computes the same value with no collective call (sequence lengths match
across ranks), and a resumed run draws exactly the sequence an uninterrupted one would.
"""
from __future__ import annotations

import random

from elit.data.seeding import derive_seed
from elit.errors import UserError
from elit.model import BudgetSpace

_BUDGET_STREAM = 0xB0D6E7  # keeps budget draws independent of the other per-step random streams


class TrainingBudgets:
    """`draws(step)` -> the budget of that step. mode: "multi" (uniform over lo..hi), "full", or an int."""

    def __init__(self, mode, space: BudgetSpace, seed: int, lo: int | None = None, hi: int | None = None):
        self.seed = int(seed)
        budgets = space.budgets
        if not budgets:  # plain backbone: no interface, no budget
            if mode != "full":
                raise UserError("a plain backbone has no budgets; set train.budget_draw=full")
            self.choices = [None]
            return
        if mode == "full":
            self.choices = [budgets[-1]]
        elif mode == "multi":
            lo = budgets[0] if lo is None else int(lo)
            hi = budgets[-1] if hi is None else int(hi)
            if not (budgets[0] <= lo <= hi <= budgets[-1]):
                raise UserError(f"train.budget_min={lo} / budget_max={hi} must satisfy "
                                f"{budgets[0]} <= min <= max <= {budgets[-1]} (model.budgets)")
            self.choices = list(range(lo, hi + 1))
        else:
            if isinstance(mode, bool) or int(mode) not in budgets:
                raise UserError(f"train.budget_draw={mode} is not one of the model's budgets "
                                f"{budgets[0]}..{budgets[-1]}")
            self.choices = [int(mode)]

    def __call__(self, step: int) -> int | None:
        if len(self.choices) == 1:
            return self.choices[0]
        return random.Random(derive_seed(self.seed, step, _BUDGET_STREAM)).choice(self.choices)
