"""The budget space of a model: how many latents per group it may keep, and how user budgets resolve.

One value, used everywhere a budget is checked (the model's forward, FLOP counts, sampling
schedules, the trainer's draws, the planner), so the rules exist once:

- a budget is an int j (latents kept per group) with J_min <= j <= J;
- a float b in (0, 1] is a fraction of J, floored (0.6 of 16 keeps 9, as the authors' code);
- None is the full budget J;
- a plain backbone (no latent interface) has no budgets: only None is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from elit.errors import UserError


@dataclass(frozen=True)
class BudgetSpace:
    latents_per_group: int | None = None   # J, the full budget; None: a plain backbone
    min_budget: int = 1                    # J_min, the smallest budget the model accepts

    def __post_init__(self):
        if self.latents_per_group is None:
            return
        if not 1 <= self.min_budget <= self.latents_per_group:
            raise UserError(f"the smallest budget must lie in 1..{self.latents_per_group} (latents per group), "
                             f"got {self.min_budget}")

    @property
    def elastic(self) -> bool:
        return self.latents_per_group is not None

    @property
    def budgets(self) -> list[int]:
        """Every valid budget, lowest first; empty for a plain backbone."""
        return [] if self.latents_per_group is None else list(range(self.min_budget, self.latents_per_group + 1))

    def __contains__(self, budget) -> bool:
        return self.latents_per_group is not None and isinstance(budget, int) and self.min_budget <= budget <= self.latents_per_group

    def resolve(self, budget) -> int | None:
        """int -> itself (checked); float in (0, 1] -> floor(fraction * J); None -> J."""
        if self.latents_per_group is None:
            if budget is not None:
                raise UserError("this model has no latent interface (a plain backbone); budget must be None")
            return None
        J, lo = self.latents_per_group, self.min_budget
        if budget is None:
            return J
        if isinstance(budget, torch.Tensor):
            if budget.numel() != 1:
                raise UserError(f"budget must be one number (the same for every image of a call), got a "
                                 f"tensor of shape {tuple(budget.shape)}")
            budget = budget.item()
        if isinstance(budget, bool) or not (isinstance(budget, (int, float)) or hasattr(budget, "__index__")):
            raise UserError(f"budget must be an int (latents per group) or a float fraction in (0, 1], "
                             f"got {budget!r}")
        if isinstance(budget, float):
            if not 0.0 < budget <= 1.0:
                raise UserError(f"a float budget is a fraction of the {J} latents per group and must lie "
                                 f"in (0, 1]; got {budget}. Pass an int for a count (valid: {lo}..{J})")
            kept = math.floor(budget * J + 1e-9)   # the epsilon absorbs float error (0.3 * 10)
            if kept < lo:
                raise UserError(f"budget {budget} keeps {kept} of {J} latents per group; the smallest "
                                 f"valid budget is {lo} (fraction {lo / J:g})")
            return kept
        # a plain int as it is: torch.compile traces it (a numpy integer goes through __index__)
        kept = budget if isinstance(budget, int) else int(budget.__index__())
        if not lo <= kept <= J:
            raise UserError(f"budget {kept} is not a valid number of latents per group; valid: "
                             f"{lo}..{J} (model.budgets), or a float fraction in (0, 1]")
        return kept

    def describe(self) -> str:
        return "no budgets (plain backbone)" if self.latents_per_group is None else f"budgets {self.min_budget}..{self.latents_per_group}"
