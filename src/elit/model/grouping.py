"""Windows of tokens: the groups Read and Write work in. Pure functions of (grid, window)."""
from __future__ import annotations

import math

import torch

from elit.errors import UserError


def check_grid(grid: tuple[int, ...], window: tuple[int, ...]) -> None:
    if len(grid) != len(window):
        raise UserError(f"token grid {grid} and window {window} have different numbers of axes")
    bad = [(g, w) for g, w in zip(grid, window) if g % w]
    if bad:
        raise UserError(
            f"the token grid {tuple(grid)} is not divisible into windows of {tuple(window)} tokens; "
            f"use an input whose token grid is a multiple of the window on every axis")


def group_tokens(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]) -> torch.Tensor:
    """(B, N, D) raster tokens -> (B, G, n, D): groups in raster order, tokens raster within a window."""
    B, _, D = x.shape
    axes = len(grid)
    split = [s for g, w in zip(grid, window) for s in (g // w, w)]  # g0, w0, g1, w1, ...
    x = x.reshape(B, *split, D)
    order = [0] + [1 + 2 * a for a in range(axes)] + [2 + 2 * a for a in range(axes)] + [1 + 2 * axes]
    groups = math.prod([g // w for g, w in zip(grid, window)])    # a list, not a generator: torch.compile traces it
    return x.permute(*order).reshape(B, groups, math.prod(window), D)


def ungroup_tokens(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]) -> torch.Tensor:
    """Inverse of group_tokens: (B, G, n, D) -> (B, N, D)."""
    B, D, axes = x.shape[0], x.shape[-1], len(grid)
    counts = [g // w for g, w in zip(grid, window)]
    x = x.reshape(B, *counts, *window, D)
    order = [0] + [v for a in range(axes) for v in (1 + a, 1 + axes + a)] + [1 + 2 * axes]
    return x.permute(*order).reshape(B, math.prod(grid), D)
