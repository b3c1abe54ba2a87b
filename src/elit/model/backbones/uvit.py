"""U-ViT in the ELIT paper's form: DiT blocks (adaLN-Zero, QK-norm, RoPE) with U-Net long skips
between block i and block depth-1-i, merged by concat + Linear (Bao et al., "All are Worth Words").

With ELIT, Read sits after the head and Write before the tail; equal head and tail depths keep
every skip on one side of the interface: head <-> tail skips join spatial tokens, core <-> core
skips join latents of the same kept prefix (paper App. C: Read after block 4, Write before 24 of
28). For the original U-ViT (time and class as tokens, pre-LN blocks) see uvit_original.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from elit.model.backbones import skips as S
from elit.model.backbones.base import register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone


@dataclass(frozen=True)
class UViTArgs(DiTArgs):
    name: ClassVar[str] = "uvit"


@register_backbone
class UViTBackbone(DiTBackbone):
    args_class = UViTArgs

    def __init__(self, args: UViTArgs):
        super().__init__(args)
        self.skip_linears = S.skip_linears(args.depth, args.hidden_size)

    @classmethod
    def check_layout(cls, args, head: int, tail: int) -> None:
        S.check_layout(args.depth, head, tail)

    def embed(self, x, t, y):
        h, _, ctx = super().embed(x, t, y)
        return h, (), ctx          # side = the stack of long skips, empty at first

    def run_block(self, index, h, skips, ctx):
        if S.merges(index, self.depth):
            h, skips = S.merge(self.skip_linears, index, h, skips)
        h = self.blocks[index](h, ctx.cond, ctx.rope)
        if S.pushes(index, self.depth):
            skips = skips + (h,)
        return h, skips

    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        return super().analytic_flops(args, grid, block_tokens, groups) + S.merge_flops(args.depth, block_tokens,
                                                                                        args.hidden_size)
