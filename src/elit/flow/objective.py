"""Rectified flow: the training objective, separate from the samplers.

Convention (docs/conventions): t in [0, 1], t = 1 is pure noise,
    x_t = (1 - t) x0 + t eps,   target velocity v = eps - x0,   loss = MSE(model(x_t, t), v).
Every random draw takes an explicit `torch.Generator`, so the trainer decides where randomness comes
from (a stream seeded by (seed, step), which makes resume and multi-GPU runs reproducible).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from elit.errors import UserError

TIME_DISTRIBUTIONS = ("logit_normal", "uniform")


@dataclass
class TimeSampler:
    """t ~ logit-normal(mean, std) (SD3 / the ELIT code: logit-normal(0, 1)) or uniform, then an
    optional time shift t' = s t / (1 + (s - 1) t): s > 1 moves mass toward noise (t = 1), as used
    for high resolutions (Qwen-Image fine-tuning: s = 2.22)."""

    distribution: str = "logit_normal"
    mean: float = 0.0
    std: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        if self.distribution not in TIME_DISTRIBUTIONS:
            raise UserError(f"unknown time distribution {self.distribution!r}; choose one of {TIME_DISTRIBUTIONS}")
        if self.std <= 0 or self.shift <= 0:
            raise UserError(f"time std and shift must be positive, got std={self.std}, shift={self.shift}")

    def __call__(self, n: int, generator: torch.Generator, device=None) -> torch.Tensor:
        if self.distribution == "uniform":
            t = torch.rand(n, generator=generator, device=device)
        else:
            t = torch.sigmoid(self.mean + self.std * torch.randn(n, generator=generator, device=device))
        return shift_time(t, self.shift)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t); the identity at s = 1, keeps 0 -> 0 and 1 -> 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, with t (B,) broadcast over the other axes."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def flow_loss(model, x0: torch.Tensor, y: torch.Tensor | None, t: torch.Tensor, eps: torch.Tensor,
              budget=None) -> torch.Tensor:
    """Per-sample rectified-flow MSE, shape (B,). The caller draws t and eps (see TimeSampler) so the
    same function serves training, validation and tests. Only the first C output channels are the
    prediction (DiT checkpoints with learn_sigma have 2C)."""
    xt = interpolate(x0, eps, t)
    v = model(xt, t, y, budget=budget)
    v = v[:, : x0.shape[1]].float()
    return (v - velocity_target(x0, eps).float()).pow(2).flatten(1).mean(1)


def t_bin_index(t: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Which of `num_bins` equal-width bins of [0, 1] each t falls in (for loss-per-t logging)."""
    return (t * num_bins).long().clamp_(0, num_bins - 1)
