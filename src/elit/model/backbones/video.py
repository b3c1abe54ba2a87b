"""A video DiT: DiT blocks over (time, height, width) patches of a clip, with 3-axis RoPE.

Input (B, C, T, H, W); a Conv3d patch embed with kernel = stride = (pt, p, p) (the paper: 1x2x2)
gives a (T/pt, H/p, W/p) token grid in raster order (time slowest). ELIT groups it in 3-D windows
(the paper: 2x4x4 tokens, 64 groups at 8x16x16 tokens, J = 32); latents take RoPE over
(slot, group t, group row, group col). Everything else is DiT's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from elit.errors import UserError
from elit.model.backbones.base import register_backbone
from elit.model.backbones.dit import DiTArgs, DiTBackbone


@dataclass(frozen=True)
class VideoDiTArgs(DiTArgs):
    name: ClassVar[str] = "video-dit"
    frames: int = 8                  # frames (latent frames for a video VAE) the model is built for
    temporal_patch: int = 1          # pt: frames per patch

    def __post_init__(self):
        super().__post_init__()
        for f in ("frames", "temporal_patch"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{f} must be a positive integer, got {v!r}")
        if self.frames % self.temporal_patch:
            raise UserError(f"frames {self.frames} is not divisible by temporal_patch {self.temporal_patch}")
        if self.pos_embed != "none":
            raise UserError("a video DiT takes its positions from 3-axis RoPE: set pos_embed='none'")

    @property
    def patch(self) -> tuple[int, ...]:
        return (self.temporal_patch, self.patch_size, self.patch_size)

    def input_shape(self, input_size: int | None = None) -> tuple[int, ...]:
        size = input_size or self.input_size
        return (self.in_channels, self.frames, size, size)

    def default_window(self) -> tuple[int, ...]:
        """2 token-frames x (height / 4) x (width / 4): the paper's 2x4x4 at 8x16x16 tokens."""
        t, h, w = self.grid
        return (min(2, t), max(1, h // 4), max(1, w // 4))


@register_backbone
class VideoDiTBackbone(DiTBackbone):
    args_class = VideoDiTArgs
