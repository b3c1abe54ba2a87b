"""Distillation from a frozen teacher: turning a pretrained model into ELIT (elit finetune).

Paper (Qwen-Image, ELIT-SPEC 2.6): loss = rectified-flow loss + lambda ||v_student(x_t, t; budget)
- v_teacher(x_t, t)||^2 with lambda = 20, chosen so that both terms are of similar size; the student
starts as the teacher's weights plus a fresh latent interface, and the teacher runs the full model.

The teacher's velocity at x_t = (1 - t) x0 + t eps, t in [0, 1]:
- a velocity teacher (rectified flow: our models, a diffusers Qwen-Image / SD3) is called as is;
- an epsilon teacher (a converted DiT / U-ViT, discrete VP schedule) is called at the VP point of the
  same signal-to-noise ratio, x_vp = c x_t at fractional step s (elit.flow.vp.rf_to_vp), fed
  t = s / T; its noise prediction eps_hat gives x0_hat = (x_t - t eps_hat) / (1 - t) and the
  velocity eps_hat - x0_hat = (eps_hat - x_t) / (1 - t) (1 - t floored at 1e-3).
"""
from __future__ import annotations

import torch

from elit.flow.objective import interpolate, velocity_target
from elit.flow.vp import VPSchedule


class Teacher:
    """A frozen model (eval mode, no gradients) answering `velocity(x_t, t, y)` in our convention."""

    def __init__(self, model, schedule: VPSchedule | None = None):
        self.model = model.eval().requires_grad_(False)
        self.prediction = model.config.backbone.prediction
        self.schedule = None
        if self.prediction == "epsilon":
            self.schedule = schedule or VPSchedule.for_model(model.config)

    @torch.no_grad()
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        C = x_t.shape[1]
        if self.schedule is None:
            return self.model(x_t, t, y)[:, :C]
        step, scale = self.schedule.rf_to_vp(t)
        x_vp = (scale.view(-1, *[1] * (x_t.dim() - 1)) * x_t.double()).to(x_t.dtype)
        eps = self.model(x_vp, (step / self.schedule.steps).float(), y)[:, :C]
        return VPSchedule.velocity_from_epsilon(eps, x_t, t)


def distill_loss(student, teacher: Teacher, x0: torch.Tensor, y, t: torch.Tensor, eps: torch.Tensor, budget,
                 weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (total, flow, distill) losses, each (B,): flow = ||v_s - (eps - x0)||^2 and
    distill = ||v_s - v_teacher||^2 (means over pixels), total = flow + weight * distill."""
    xt = interpolate(x0, eps, t)
    v = student(xt, t, y, budget=budget)[:, : x0.shape[1]].float()
    v_teacher = teacher.velocity(xt, t, y).float()
    flow = (v - velocity_target(x0, eps).float()).pow(2).flatten(1).mean(1)
    distill = (v - v_teacher).pow(2).flatten(1).mean(1)
    return flow + weight * distill, flow, distill
