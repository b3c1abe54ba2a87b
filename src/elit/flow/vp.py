"""Discrete variance-preserving (DDPM) schedules, the home of converted epsilon-prediction models,
and the map between their noise levels and rectified-flow times.

A converted DiT or U-ViT predicts the noise eps of x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps at
an integer step s in 0..T-1 (fed to the model as t = s / T, time_scale 1000):
- "linear" (DiT, ADM): betas linear in [1e-4, 0.02] over 1000 steps;
- "scaled-linear" (Stable Diffusion, U-ViT's latent models): sqrt(betas) linear in
  [sqrt(0.00085), sqrt(0.012)] over 1000 steps.

Rectified flow's x_t = (1 - t) x0 + t eps is the same point as a VP sample up to a scale: with
abar(t) = (1 - t)^2 / ((1 - t)^2 + t^2) (equal signal-to-noise ratio), x_vp = x_t / sqrt((1 - t)^2 + t^2).
`rf_to_vp` finds the (fractional) step with that abar by interpolating log-SNR over the discrete
table, so a VP teacher can be queried at any rectified-flow time (elit finetune, flow/distill.py).
"""
from __future__ import annotations

import math

import torch

from elit.errors import UserError

SCHEDULES = ("linear", "scaled-linear")
# backbone name -> the schedule its converted checkpoints were trained with
DEFAULT_SCHEDULE = {"dit": "linear", "uvit-original": "scaled-linear"}


class VPSchedule:
    def __init__(self, name: str = "linear", steps: int = 1000):
        if name not in SCHEDULES:
            raise UserError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
        self.name, self.steps = name, steps
        if name == "linear":
            betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
        else:
            betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)           # abar_s, s = 0..T-1 (float64)
        self.log_snr = (self.alphas_cumprod / (1 - self.alphas_cumprod)).log()   # decreasing in s

    @classmethod
    def for_model(cls, config, name: str | None = None) -> "VPSchedule":
        """The schedule of a converted model (by its backbone), or `name` when given."""
        if name is None:
            backbone = type(config.backbone).name
            if backbone not in DEFAULT_SCHEDULE:
                raise UserError(f"no default noise schedule for backbone {backbone!r}; give one of "
                                f"{', '.join(SCHEDULES)}")
            name = DEFAULT_SCHEDULE[backbone]
        return cls(name)

    def alpha_bar(self, step: torch.Tensor) -> torch.Tensor:
        """abar at integer or fractional steps (log-SNR interpolated between table entries)."""
        step = step.to(torch.float64).clamp(0, self.steps - 1)
        lo = step.floor().long().clamp(max=self.steps - 2)
        frac = step - lo
        log_snr = torch.lerp(self.log_snr[lo], self.log_snr[lo + 1], frac)
        return torch.sigmoid(log_snr)

    def rf_to_vp(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rectified-flow times t -> (fractional VP step s, scale c): the teacher's input is
        x_vp = c * x_t at step s.

        Times beyond the table's SNR range are clamped to its ends (step 0 or T-1): there the
        teacher sees the closest noise level it was trained on, with the signal scaled as it expects."""
        t = t.to(torch.float64).clamp(1e-6, 1 - 1e-6)
        log_snr = 2 * ((1 - t) / t).log()
        table = self.log_snr.flip(0)                                   # increasing
        index = torch.searchsorted(table, log_snr).clamp(1, self.steps - 1)
        lo, hi = table[index - 1], table[index]
        frac = ((log_snr - lo) / (hi - lo)).clamp(0, 1)
        step = (self.steps - 1) - (index - 1 + frac)                   # back to s (decreasing SNR)
        abar = self.alpha_bar(step)
        # x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps = c ((1 - t) x0 + t eps) when the SNRs agree;
        # clamped times keep the teacher's abar, so take c from the signal coefficient.
        scale = abar.sqrt() / (1 - t)
        return step, scale

    @staticmethod
    def velocity_from_epsilon(eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The rectified-flow velocity eps - x0 at x_t implied by a noise prediction eps: with
        x0 = (x_t - t eps) / (1 - t), v = (eps - x_t) / (1 - t). An epsilon model says little about
        x0 near pure noise (the error grows as 1 / (1 - t)), so 1 - t is floored at 1e-3."""
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        one_minus_t = (1 - t.to(torch.float64)).clamp(min=1e-3).view(shape)
        return ((eps.double() - x_t.double()) / one_minus_t).to(x_t.dtype)
