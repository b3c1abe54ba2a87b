"""DiT (Peebles & Xie): patch embed, adaLN-Zero blocks on all tokens, adaLN final layer.

Options beyond the original: per-head QK RMSNorm and 2-D RoPE (the ELIT paper uses both in every
backbone), and `pos_embed="none"` to rely on RoPE alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from elit.model.backbones.base import Backbone, BackboneArgs, Context, transformer_block_flops, register_backbone
from elit.model.layers import (DiTBlock, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder,
                               sincos_pos_embed_2d)
from elit.errors import UserError


@dataclass(frozen=True)
class DiTArgs(BackboneArgs):
    name: ClassVar[str] = "dit"
    learn_sigma: bool = False           # DiT checkpoints: 2*C outputs, the first C are the prediction
    qk_norm: bool = True                # the paper uses QK-norm and RoPE in every block
    rope: bool = True
    rope_theta: float = 10000.0
    pos_embed: str = "none"             # "sincos" (fixed absolute, as DiT) or "none" (RoPE only)

    def __post_init__(self):
        super().__post_init__()
        if self.pos_embed not in ("sincos", "none"):
            raise UserError(f"pos_embed must be 'sincos' or 'none', got {self.pos_embed!r}")
        if self.pos_embed == "sincos" and self.hidden_size % 4:
            raise UserError(f"pos_embed='sincos' needs a hidden size divisible by 4, got {self.hidden_size}")

    @property
    def uses_rope(self) -> bool:
        return self.rope

    @property
    def patch_elements(self) -> int:
        return math.prod(self.patch)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


@register_backbone
class DiTBackbone(Backbone):
    args_class = DiTArgs

    def __init__(self, args: DiTArgs):
        super().__init__(args)
        D = args.hidden_size
        self.x_embedder = PatchEmbed(args.in_channels, D, args.patch)
        self.t_embedder = TimestepEmbedder(D, time_scale=args.time_scale)
        self.y_embedder = LabelEmbedder(args.num_classes, D) if args.num_classes > 0 else None
        self.blocks = nn.ModuleList(self.make_block(i) for i in range(args.depth))
        self.final_layer = FinalLayer(D, args.patch_elements, args.out_channels)

    def make_block(self, index: int) -> nn.Module:
        a = self.args
        return DiTBlock(a.hidden_size, a.num_heads, a.mlp_ratio, a.qk_norm)

    def embed(self, x, t, y):
        h = self.x_embedder(x)                      # (B, D, H/p, W/p), or (B, D, T/pt, H/p, W/p)
        grid = tuple(h.shape[2:])
        tokens = h.flatten(2).transpose(1, 2)       # (B, N, D), raster order
        if self.args.pos_embed == "sincos":
            tokens = tokens + sincos_pos_embed_2d(self.hidden_size, *grid).to(tokens)
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y)
        c = c.to(tokens.dtype)
        return tokens, None, Context(cond=c, grid=grid, rope=self.rope(self.spatial_coordinates(grid, x.device), x.device))

    def finish(self, h, side, ctx) -> torch.Tensor:
        return unpatchify(self.final_layer(h, ctx.cond), ctx.grid, self.args.patch, self.args.out_channels)

    def time_embedding(self, t):
        return self.t_embedder(t)

    @classmethod
    def analytic_flops(cls, args: DiTArgs, grid, block_tokens, groups=None) -> float:
        d, pe, N = args.hidden_size, args.patch_elements, math.prod(grid)
        hidden = int(d * args.mlp_ratio)
        total = 2 * N * args.in_channels * pe * d                          # patch embed
        total += 2 * (TimestepEmbedder.FREQ_DIM * d + d * d)               # timestep MLP
        total += 4 * d * d + 2 * N * d * pe * args.out_channels            # final adaLN + linear
        return total + sum(transformer_block_flops(L, d, hidden) for L in block_tokens)

    def initialize_weights(self) -> None:
        # DiT's recipe: xavier linears, zero biases, zero adaLN gates and a zero output layer.
        def basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


def unpatchify(out: torch.Tensor, grid, patch, C: int) -> torch.Tensor:
    """(B, N, prod(patch)*C) per-token patches (channel-last within a patch) -> (B, C, *sizes), for
    2-D grids (gh, gw) with patch (p, p), as DiT, and 3-D grids (gt, gh, gw) with (pt, p, p)."""
    a = len(grid)
    out = out.reshape(-1, *grid, *patch, C)
    # (B, g0, g1.., p0, p1.., C) -> (B, C, g0, p0, g1, p1, ...)
    order = [0, 1 + 2 * a] + [v for i in range(a) for v in (1 + i, 1 + a + i)]
    return out.permute(*order).reshape(-1, C, *(g * p for g, p in zip(grid, patch)))
