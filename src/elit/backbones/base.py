"""The backbone adapter protocol: how ELIT embeds, splits and calls a block stack.

A backbone says how to turn (x, t, y) into spatial tokens and a condition (`embed`), how to call
block i on a token sequence (`run_block`), which rotary positions tokens and latents get, what the
core needs around the latents (`enter_core` / `exit_core`, e.g. U-ViT's time/class tokens), and how
to turn the final tokens back into an image (`finish`). The ELIT wrapper (elit.models) owns the
head / core / tail split and the latent interface; a backbone never knows whether it is elastic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from elit.layers import rope_frequencies


@dataclass
class ForwardState:
    """What one forward call carries between the adapter's hooks."""
    tokens: torch.Tensor            # (B, N, D) spatial tokens, raster order
    cond: torch.Tensor              # (B, D) conditioning vector (time + class)
    grid: tuple[int, ...]           # token grid, (h, w) or (t, h, w)
    extras: dict = field(default_factory=dict)   # adapter-owned (skips, text tokens, ...)


class Backbone(nn.Module):
    hidden_size: int
    num_heads: int
    blocks: nn.ModuleList
    use_rope: bool = False
    rope_theta: float = 10000.0

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> ForwardState:
        raise NotImplementedError

    def run_block(self, index: int, h: torch.Tensor, state: ForwardState, rope) -> torch.Tensor:
        return self.blocks[index](h, state.cond, rope)

    def finish(self, h: torch.Tensor, state: ForwardState) -> torch.Tensor:
        raise NotImplementedError

    def rope(self, coords: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rotary angles for tokens at integer coords (L, axes), or None without RoPE."""
        if not self.use_rope:
            return None
        return rope_frequencies(coords.to(device), self.hidden_size // self.num_heads, self.rope_theta)

    def spatial_coordinates(self, grid: tuple[int, ...]) -> torch.Tensor:
        """(N, axes) integer coordinates of the raster-ordered spatial tokens."""
        mesh = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)

    def enter_core(self, latents: torch.Tensor, state: ForwardState) -> torch.Tensor:
        return latents

    def exit_core(self, seq: torch.Tensor, state: ForwardState) -> torch.Tensor:
        return seq

    def initialize_weights(self) -> None:
        raise NotImplementedError


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str):
    def deco(cls):
        BACKBONES[name] = cls
        return cls
    return deco
