"""Guidance for elastic-budget models: CFG, cheap CFG and autoguidance, one formula each.

With G(x | cond; budget) the model's velocity and lambda >= 0 the guidance scale (0 = none):

    cfg   v = (1 + lambda) G(x|c; J) - lambda G(x|null; J)
    ccfg  v = (1 + lambda) G(x|c; J) - lambda G(x|null; Jw)     ("cheap CFG", Jw <= J)
    ag    v = (1 + lambda) G(x|c; J) - lambda G(x|c; Jw)        (autoguidance, Jw < J)

Many codebases state the scale as w = 1 + lambda (DiT's `cfg_scale`); `make_guidance(w=...)`
accepts it, and everything printed shows both ("lambda=0.25 (w=1.25)"). The weak budget Jw
defaults to the model's lowest budget. An optional interval [lo, hi] applies guidance only at
times lo <= t <= hi; elsewhere one conditional pass is run.

Passes that share a budget run as one batched forward; passes at different budgets run apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from elit.errors import UserError
from elit.model.condition import batch_condition

MODES = ("none", "cfg", "ccfg", "ag")


@dataclass(frozen=True)
class Guidance:
    mode: str = "none"
    scale: float = 0.0                     # lambda; w = 1 + lambda
    weak_budget: object = None             # ccfg / ag: budget of the weak pass (None: lowest)
    interval: tuple | None = None          # (lo, hi) in t, or None for every step

    @property
    def w(self) -> float:
        return 1.0 + self.scale

    @property
    def enabled(self) -> bool:
        return self.mode != "none" and self.scale != 0.0

    def applies_at(self, t: float) -> bool:
        if not self.enabled:
            return False
        return self.interval is None or self.interval[0] <= t <= self.interval[1]

    def describe(self) -> str:
        if self.mode == "none":
            return "none"
        text = f"{self.mode} lambda={self.scale:g} (w={self.w:g})"
        if self.interval is not None:
            text += f" for t in [{self.interval[0]:g}, {self.interval[1]:g}]"
        return text


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{what} must be finite, got {value!r}")
    return number


def parse_interval(value) -> tuple | None:
    """None, (lo, hi) or 'lo,hi' -> (lo, hi) with 0 <= lo <= hi <= 1."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(",")
        if len(parts) != 2:
            raise UserError(f"guidance interval must be 'LO,HI' (times in [0, 1]), got {value!r}")
        value = parts
    lo, hi = (_number(v, "guidance interval bound") for v in value)
    if not 0.0 <= lo <= hi <= 1.0:
        raise UserError(f"guidance interval needs 0 <= lo <= hi <= 1, got [{lo}, {hi}]")
    return (lo, hi)


def make_guidance(mode: str = "none", scale=None, w=None, weak_budget=None, interval=None) -> Guidance:
    """Validate user input into a Guidance. Give the scale as `scale` (lambda) or `w` (1 + lambda)."""
    if mode is None:
        mode = "none"
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise UserError(f"unknown guidance mode {mode!r}; choose one of: {', '.join(MODES)}")
    mode = mode.lower()
    if scale is not None and w is not None:
        raise UserError("give the guidance scale as lambda (scale) or as w = 1 + lambda, not both")
    if mode != "none" and scale is None and w is None:
        raise UserError(f"guidance {mode!r} needs a scale: lambda (e.g. scale=0.25; 0 = none) or w = 1 + lambda")
    lam = _number(w, "guidance w") - 1.0 if w is not None else _number(scale or 0.0, "guidance scale")
    if mode == "none" and lam != 0.0:
        raise UserError(f"guidance scale {lam:g} given with guidance mode 'none'; pick cfg, ccfg or ag")
    if mode == "none" and weak_budget is not None:   # else it would be recorded (and echoed) but never run
        raise UserError(f"weak budget {weak_budget} given with guidance mode 'none', which runs no weak pass; "
                        f"pick ccfg or ag, or leave the weak budget out")
    if mode == "cfg" and weak_budget is not None:
        raise UserError("cfg runs both passes at the main budget; use ccfg for a cheaper weak budget")
    return Guidance(mode, lam, weak_budget, parse_interval(interval))


def resolve_weak_budget(guidance: Guidance, budgets, resolve) -> object:
    """The weak pass's budget (resolved) for ccfg / ag; None for cfg / none."""
    if guidance.mode not in ("ccfg", "ag"):
        return None
    if guidance.weak_budget is None:
        if not budgets:
            raise UserError(f"{guidance.mode} needs an ELIT model with budgets; this is a plain backbone")
        return budgets[0]
    return resolve(guidance.weak_budget)


def check_budgets(guidance: Guidance, step_budgets: list, weak) -> None:
    """ccfg: weak <= main at every step; ag: weak < main (else the two passes are the same model)."""
    if guidance.mode not in ("ccfg", "ag"):
        return
    for b in step_budgets:
        if guidance.mode == "ccfg" and weak > b:
            raise UserError(f"ccfg weak budget {weak} is above the main budget {b}; it must be <= it")
        if guidance.mode == "ag" and weak >= b:
            raise UserError(f"autoguidance needs a weak budget below the main budget; got weak {weak} "
                             f">= main {b}")


def pass_budgets(guidance: Guidance, t: float, budget, weak) -> list:
    """Budgets of the forward passes (per image) one velocity evaluation at time t runs.

    The sampler runs exactly these and `sampling_gflops` counts exactly these.
    """
    if not guidance.applies_at(t):
        return [budget]
    return [budget, budget if guidance.mode == "cfg" else weak]


def guided_velocity(model, x, t: float, y, budget, guidance: Guidance, weak, null=None) -> torch.Tensor:
    """One guided evaluation at time t (a float) for the batch x: the velocity, or epsilon for an
    epsilon model (the formulas are linear in the prediction). `null` is the unconditional input
    of cfg / ccfg (default: `model.null_condition(y)`; a negative prompt's encoding for text)."""
    B = x.shape[0]
    tt = torch.full((B,), t, dtype=torch.float32, device=x.device)
    if not guidance.applies_at(t):
        return model(x, tt, y, budget=budget)
    if guidance.mode == "ag":
        weak_y = y
    else:
        weak_y = null if null is not None else model.null_condition(y)
    weak_budget = budget if guidance.mode == "cfg" else weak
    if weak_budget == budget:  # one batched forward for both passes
        both_y = batch_condition([y, weak_y])
        strong, weak_v = model(torch.cat([x, x]), torch.cat([tt, tt]), both_y, budget=budget).chunk(2)
    else:
        strong = model(x, tt, y, budget=budget)
        weak_v = model(x, tt, weak_y, budget=weak_budget)
    # (1 + lambda) strong - lambda weak, written as strong + lambda (strong - weak).
    return strong + guidance.scale * (strong - weak_v)
