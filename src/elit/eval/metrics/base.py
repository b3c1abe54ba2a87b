"""The feature-extractor contract every metric network follows.

`name` identifies network *and* preprocessing (it is stored in reference files and must match);
`protocol` says the same in words for printing next to each number.
"""
from __future__ import annotations

import numpy as np
import torch

from elit.eval.metrics.images import as_uint8_nchw
from elit.errors import UserError


class FeatureExtractor:
    name: str = ""
    protocol: str = ""
    dim: int = 0
    has_logits = False  # True where `logits()` exists (needed by the Inception Score)

    def __init__(self, batch_size: int = 64, device: str | torch.device = "cpu"):
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B,C,H,W) on CPU -> float features (B, dim)."""
        raise NotImplementedError

    @torch.inference_mode()
    def __call__(self, images) -> np.ndarray:
        """uint8 images (N,H,W), (N,H,W,C) or (N,C,H,W) -> float64 features (N, dim)."""
        x = as_uint8_nchw(images)
        out = [self.forward(x[i:i + self.batch_size]).double().cpu() for i in range(0, len(x), self.batch_size)]
        feats = torch.cat(out).numpy() if out else np.zeros((0, self.dim))
        if not np.isfinite(feats).all():
            raise UserError(f"{self.name}: NaN/Inf in the features of {int((~np.isfinite(feats)).any(1).sum())} "
                             "images (corrupt weights or inputs); refusing to return them")
        return feats

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.protocol})"
