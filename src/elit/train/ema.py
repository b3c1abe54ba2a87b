"""Exponential moving average of the parameters, kept in fp32 whatever the training precision.

The shadow copies live beside the parameters: under FSDP2 they are sharded DTensors like the
parameters themselves, so the EMA never needs the whole model on one rank except when a full copy
is written (`full_state`, a collective).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from elit.train.distributed import full_tensor
from elit.errors import UserError


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() for _, p in model.named_parameters()]
        # shadow <- shadow + (1 - decay) * (param - shadow)
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    def full_state(self) -> dict:
        """{name: full fp32 CPU tensor}; every rank must call it under FSDP."""
        return {n: full_tensor(s).cpu() for n, s in zip(self.names, self.shadow)}

    @torch.no_grad()
    def load_full_state(self, state: dict) -> None:
        missing = sorted(set(self.names) - set(state))
        if missing:
            raise UserError(f"EMA state lacks parameters {missing[:5]}")
        for i, (name, s) in enumerate(zip(self.names, self.shadow)):
            full = state[name].to(device=s.device, dtype=torch.float32)
            if hasattr(s, "device_mesh"):  # FSDP2 DTensor: keep only this rank's shard
                from torch.distributed.tensor import distribute_tensor
                self.shadow[i] = distribute_tensor(full, s.device_mesh, s.placements)
            else:
                s.copy_(full)
