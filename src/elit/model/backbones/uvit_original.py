"""The original U-ViT (github baofff/U-ViT, `libs/uvit.py`): everything is a token.

Sequence [class token, time token, patches] + a learned absolute position table; pre-LN blocks
(LayerNorm with affine, plain attention, exact-GELU MLP, no adaLN) in three groups, in-blocks /
a mid block / out-blocks, with a long skip from in-block i into its mirror out-block (concat +
Linear); then LayerNorm, a Linear to patches, the extra tokens dropped, and an optional 3x3 conv.
Our `depth` counts every block (baofff's `depth=28` is 14 + 1 + 14 = our 29).

ELIT form: the extra tokens (time, class) are not image tokens, so the Read never sees them; they
travel in the side stream and every block runs on [extras ; image stream]: in the core that is
[extras ; kept latents], so the core stays conditioned and the extras return to the tail. The Read's
adaLN takes the sum of the time and class embeddings (the tokens before any block). Latents get a
learned position table (the backbone has no RoPE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from elit.errors import UserError
from elit.model.backbones import skips as S
from elit.model.backbones.base import Backbone, BackboneArgs, Context, transformer_block_flops, register_backbone
from elit.model.backbones.dit import unpatchify
from elit.model.layers import Mlp, SelfAttention, timestep_sinusoid


@dataclass(frozen=True)
class UViTOriginalArgs(BackboneArgs):
    name: ClassVar[str] = "uvit-original"
    qkv_bias: bool = False
    mlp_time_embed: bool = False       # an MLP (D -> 4D -> D) on the time sinusoid; baofff's ImageNet models: off
    conv: bool = False                 # a 3x3 conv on the output image (baofff's pixel-space models)
    skip: bool = True                  # the long skips

    def __post_init__(self):
        super().__post_init__()
        if self.depth % 2 == 0:
            raise UserError(f"the original U-ViT has in-blocks, one mid block and as many out-blocks: depth "
                             f"must be odd (baofff's depth=28 is 29 blocks here), got {self.depth}")

    @property
    def extra_tokens(self) -> int:
        return 2 if self.num_classes > 0 else 1


class PreLNBlock(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x)); LayerNorm with affine (eps 1e-5), exact GELU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_backbone
class UViTOriginalBackbone(Backbone):
    args_class = UViTOriginalArgs

    def __init__(self, args: UViTOriginalArgs):
        super().__init__(args)
        D, p, C = args.hidden_size, args.patch_size, args.in_channels
        self.patch_embed = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.time_embed = (nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, D))
                           if args.mlp_time_embed else nn.Identity())
        # num_classes real classes + the null row (baofff counts it in num_classes: 1001 for ImageNet)
        self.label_emb = nn.Embedding(args.num_classes + 1, D) if args.num_classes > 0 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, args.extra_tokens + args.grid[0] * args.grid[1], D))
        self.blocks = nn.ModuleList(PreLNBlock(D, args.num_heads, args.mlp_ratio, args.qkv_bias)
                                    for _ in range(args.depth))
        self.skip_linears = S.skip_linears(args.depth, D) if args.skip else nn.ModuleDict()
        self.norm = nn.LayerNorm(D)
        self.decoder_pred = nn.Linear(D, p * p * C)
        self.final_layer = nn.Conv2d(C, C, 3, padding=1) if args.conv else nn.Identity()

    @classmethod
    def check_layout(cls, args, head: int, tail: int) -> None:
        if args.skip:
            S.check_layout(args.depth, head, tail)

    def check_input(self, x):
        super().check_input(x)
        grid = (x.shape[-2] // self.args.patch_size, x.shape[-1] // self.args.patch_size)
        if grid != self.args.grid:
            raise UserError(f"this U-ViT has a learned position table for a {self.args.grid[0]}x{self.args.grid[1]} "
                            f"token grid (input {self.args.input_size}); got input {tuple(x.shape[-2:])}")

    def embed(self, x, t, y):
        a = self.args
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)          # (B, N, D)
        time = self.time_embed(timestep_sinusoid(t * a.time_scale, a.hidden_size).to(tokens.dtype))
        extras = [time[:, None]]
        cond = time
        if self.label_emb is not None:
            label = self.label_emb(y)
            extras.insert(0, label[:, None])                            # [class, time, patches]
            cond = cond + label
        seq = torch.cat([*extras, tokens], dim=1) + self.pos_embed.to(tokens.dtype)
        E = a.extra_tokens
        side = (seq[:, :E], ())                                         # (extra tokens, long skips)
        return seq[:, E:], side, Context(cond=cond, grid=tuple(a.grid))

    def run_block(self, index, h, side, ctx):
        extras, skips = side
        x = torch.cat([extras, h], dim=1)
        if self.args.skip and S.merges(index, self.depth):
            x, skips = S.merge(self.skip_linears, index, x, skips)
        x = self.blocks[index](x)
        if self.args.skip and S.pushes(index, self.depth):
            skips = skips + (x,)
        E = extras.shape[1]
        return x[:, E:], (x[:, :E], skips)

    def finish(self, h, side, ctx):
        extras, _ = side
        x = self.decoder_pred(self.norm(torch.cat([extras, h], dim=1)))[:, extras.shape[1]:]
        out = unpatchify(x, ctx.grid, self.args.patch, self.args.in_channels)
        return self.final_layer(out)

    def time_embedding(self, t):
        return self.time_embed(timestep_sinusoid(t * self.args.time_scale, self.args.hidden_size))

    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        d, p, C, E = args.hidden_size, args.patch_size, args.in_channels, args.extra_tokens
        N = grid[0] * grid[1]
        hidden = int(d * args.mlp_ratio)
        with_extras = [L + E for L in block_tokens]
        total = 2 * N * C * p * p * d                                     # patch embed
        total += 16 * d * d if args.mlp_time_embed else 0                 # time MLP
        total += sum(transformer_block_flops(L, d, hidden, adaln=False) for L in with_extras)
        total += S.merge_flops(args.depth, with_extras, d) if args.skip else 0
        total += 2 * (N + E) * d * p * p * C                              # decoder_pred (extras too)
        total += 2 * N * p * p * C * C * 9 if args.conv else 0            # 3x3 conv on the image
        return total

    def initialize_weights(self) -> None:
        # baofff's recipe: truncated-normal(0.02) linears and position table, zero biases, unit LayerNorms.
        def init(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.apply(init)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
