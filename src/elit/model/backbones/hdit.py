"""HDiT in the ELIT paper's form: DiT blocks with one 2x2 token merge to a doubled width and a
split back with a skip, full self-attention at every level (an hourglass; not k-diffusion's
neighbourhood-attention HDiT, whose merge/split ideas it borrows).

    blocks [0, merge_at)        width D on N tokens
    merge                       2x2 tokens -> one of width 2D (pixel-unshuffle + Linear(4D -> 2D))
    blocks [merge_at, split_at) width 2D (2x the heads, same head width) on N/4 tokens
    split                       Linear(2D -> 4D), pixel-shuffle, then lerp(skip, x, f) with the
                                pre-merge tokens (f learned, starts at 0.5)
    blocks [split_at, depth)    width D on N tokens

ELIT places Read/Write at 4 and 24 of 28 and the hourglass (merge 8, split 20) inside the core:
"group-wise downsampling in the latent space". Our rule for latents: within each group, pad the
kept j latents with zeros to a multiple of 4, merge slots 4u..4u+3 into merged latent u (Linear
4D -> 2D, the same weights as the spatial merge), run the bottleneck on the G * ceil(j/4) merged
latents, split each back into 4 slots, drop the padding (truncate to j) and lerp with the skip.
A merged latent's rotary position is the mean of its real slots' (slot, group row, group col).
The prefix property holds at every budget, multiples of 4 or not: slots >= j are never computed,
and padding is zeros, not the dropped latents. Merged units u < j // 4 see only real slots.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from elit.errors import UserError
from elit.model.backbones.base import Context, transformer_block_flops, register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone
from elit.model.layers import DiTBlock


@dataclass(frozen=True)
class HDiTArgs(DiTArgs):
    name: ClassVar[str] = "hdit"
    merge_at: int | None = None      # first block at the merged level; None: 2 * depth // 7 (8 of 28)
    split_at: int | None = None      # first block after the split; None: depth - merge_at (20 of 28)

    def __post_init__(self):
        super().__post_init__()
        m, s = self.levels
        if not 0 < m < s < self.depth:
            raise UserError(f"HDiT needs 0 < merge_at < split_at < depth; got merge_at={m}, split_at={s}, "
                             f"depth={self.depth}")
        if any(g % 2 for g in self.grid):
            raise UserError(f"HDiT merges 2x2 tokens: the token grid {list(self.grid)} must be even on both axes")

    @property
    def levels(self) -> tuple[int, int]:
        m = self.merge_at if self.merge_at is not None else max(1, 2 * self.depth // 7)
        return m, self.split_at if self.split_at is not None else self.depth - m


@dataclass(frozen=True)
class HDiTContext(Context):
    """HDiT's constants: also the rotary angles of the merged (bottleneck) tokens or latents."""
    rope_merged: Any = None


@register_backbone
class HDiTBackbone(DiTBackbone):
    args_class = HDiTArgs

    def __init__(self, args: HDiTArgs):
        super().__init__(args)
        D = args.hidden_size
        self.merge_proj = nn.Linear(4 * D, 2 * D)
        self.split_proj = nn.Linear(2 * D, 4 * D)
        self.split_fac = nn.Parameter(torch.tensor(0.5))

    def make_block(self, index: int) -> nn.Module:
        a = self.args
        m, s = a.levels
        if m <= index < s:   # the wide level: twice the width and heads, conditioned on the D-wide vector
            return DiTBlock(2 * a.hidden_size, 2 * a.num_heads, a.mlp_ratio, a.qk_norm, cond_dim=a.hidden_size)
        return super().make_block(index)

    @classmethod
    def check_layout(cls, args, head: int, tail: int) -> None:
        m, s = args.levels
        if not (head <= m and s < args.depth - tail):
            raise UserError(f"the hourglass (merge before block {m}, split before block {s}) must lie inside the "
                            f"latent core (merge and split before core blocks {head}..{args.depth - tail - 1}); move head_depth/tail_depth or "
                            f"merge_at/split_at (paper: Read/Write at 4 and 24, merge/split at 8 and 20 of 28)")

    # ------------------------------------------------------------------ data path
    def embed(self, x, t, y):
        h, _, ctx = super().embed(x, t, y)
        gh, gw = ctx.grid
        if gh % 2 or gw % 2:
            raise UserError(f"HDiT merges 2x2 tokens: the token grid {gh}x{gw} must be even on both axes")
        coords = self.spatial_coordinates((gh // 2, gw // 2), x.device).float() * 2 + 0.5   # mean of each 2x2
        return h, (), HDiTContext(cond=ctx.cond, grid=ctx.grid, rope=ctx.rope, rope_merged=self.rope(coords, x.device))

    def core_context(self, ctx, layout):
        core = super().core_context(ctx, layout)
        coords = layout.positions.coords
        rope = None if coords is None else self.rope(merged_coordinates(coords, layout.groups, layout.kept), ctx)
        return dataclasses.replace(core, rope_merged=rope)

    def run_block(self, index, h, skips, ctx):
        m, s = self.args.levels
        core = ctx.core
        if index == m:
            skips = skips + (h,)
            h = self.merge(h, ctx.grid, core)
        if index == s:
            skip, skips = skips[-1], skips[:-1]
            h = torch.lerp(skip, self.split(h, ctx.grid, core), self.split_fac.to(h.dtype))
        rope = ctx.rope_merged if m <= index < s else ctx.rope
        return self.blocks[index](h, ctx.cond, rope), skips

    def merge(self, h, grid, core) -> torch.Tensor:
        B, _, D = h.shape
        if core is None:   # spatial: 2x2 windows of the token grid, raster order
            gh, gw = grid
            h = h.reshape(B, gh // 2, 2, gw // 2, 2, D).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, 4 * D)
        else:              # latents: 4 consecutive slots of a group, zero-padded to a multiple of 4
            G, j = core.groups, core.kept
            h = F.pad(h.reshape(B, G, j, D), (0, 0, 0, 4 * math.ceil(j / 4) - j)).reshape(B, -1, 4 * D)
        return self.merge_proj(h)

    def split(self, h, grid, core) -> torch.Tensor:
        B, L, D2 = h.shape
        D = D2 // 2
        h = self.split_proj(h)
        if core is None:
            gh, gw = grid
            return h.reshape(B, gh // 2, gw // 2, 2, 2, D).permute(0, 1, 3, 2, 4, 5).reshape(B, gh * gw, D)
        G, j = core.groups, core.kept
        return h.reshape(B, G, -1, D)[:, :, :j].reshape(B, G * j, D)

    # ------------------------------------------------------------------ cost
    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        m, s = args.levels
        d, hidden = args.hidden_size, int(args.hidden_size * args.mlp_ratio)
        wide = [L // 4 if groups is None else groups * math.ceil(L // groups / 4) for L in block_tokens]
        outer = [L if not m <= i < s else 0 for i, L in enumerate(block_tokens)]
        total = super().analytic_flops(args, grid, [], groups)               # embed + final layer
        total += sum(transformer_block_flops(L, d, hidden) for i, L in enumerate(outer) if not m <= i < s)
        total += sum(transformer_block_flops(wide[i], 2 * d, 2 * hidden, adaln=False) + 24 * d * d for i in range(m, s))
        total += 16 * wide[m] * d * d + 16 * wide[s - 1] * d * d             # merge and split projections
        return total

    def initialize_weights(self) -> None:
        super().initialize_weights()   # xavier for every Linear (merge and split too), zero adaLN gates
        with torch.no_grad():
            self.split_fac.fill_(0.5)


def merged_coordinates(coords: torch.Tensor, groups: int, kept: int) -> torch.Tensor:
    """(G*kept, A) latent coordinates -> (G*ceil(kept/4), A): each merged latent at the mean of its
    real slots (the padding has no position)."""
    A = coords.shape[-1]
    c = coords.float().reshape(groups, kept, A)
    units = math.ceil(kept / 4)
    pad = 4 * units - kept
    weight = F.pad(torch.ones(groups, kept, 1, device=coords.device), (0, 0, 0, pad)).reshape(groups, units, 4, 1)
    c = F.pad(c, (0, 0, 0, pad)).reshape(groups, units, 4, A)
    return ((c * weight).sum(2) / weight.sum(2)).reshape(-1, A)
