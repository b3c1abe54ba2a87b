"""U-Net-style long skips for a block stack: block i's output joins block depth-1-i's input.

The skips travel as a tuple in the side stream: a pushing block returns `skips + (h,)`, a merging
block takes `skips[-1]` and returns `skips[:-1]`. Nothing is stashed, so a checkpointed block
recomputes from exactly its own inputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from elit.errors import UserError


def pushes(index: int, depth: int) -> bool:
    """Blocks of the first half push their output (the middle block of an odd stack does not)."""
    return index < depth // 2


def merges(index: int, depth: int) -> bool:
    """Blocks of the second half merge the skip of their mirror block depth-1-index."""
    return index >= depth - depth // 2


def skip_linears(depth: int, dim: int) -> nn.ModuleDict:
    """One Linear(2D -> D) per merging block, keyed by the block's index."""
    return nn.ModuleDict({str(i): nn.Linear(2 * dim, dim) for i in range(depth) if merges(i, depth)})


def merge(linears: nn.ModuleDict, index: int, x: torch.Tensor, skips: tuple) -> tuple[torch.Tensor, tuple]:
    """concat + Linear of the newest skip into x; returns (x, the remaining skips)."""
    skip = skips[-1]
    if skip.shape != x.shape:   # a skip from the other side of the interface: a layout bug
        raise RuntimeError(f"block {index}: skip of shape {tuple(skip.shape)} cannot join {tuple(x.shape)}")
    return linears[str(index)](torch.cat([x, skip], dim=-1)), skips[:-1]


def check_layout(depth: int, head: int, tail: int) -> None:
    """Skips join block i and depth-1-i, so they stay on one side of the interface only if the head
    and tail are equally long (then head <-> tail skips are spatial, core <-> core skips latent)."""
    if head != tail:
        raise UserError(f"a U-ViT's long skips join block i and block {depth - 1}-i; with head_depth {head} and "
                        f"tail_depth {tail} some would cross the latent interface. Use equal head and tail "
                        f"depths (the paper: Read after block 4, Write before the last 4)")


def merge_flops(depth: int, block_tokens: list[int], dim: int) -> float:
    """FLOPs of the skip merges: a Linear(2D -> D) on every token of each merging block."""
    return sum(4 * block_tokens[i] * dim * dim for i in range(depth) if merges(i, depth))
