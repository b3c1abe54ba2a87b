"""Deterministic randomness for data: every random choice is a pure function of integers.

Nothing here touches the global RNG. A flip decision depends only on (seed, epoch, index), so it is
the same whatever the number of DataLoader workers or ranks, and after a resume.
"""
from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """Mix several non-negative integers into one 63-bit seed (numpy's SeedSequence hashing), so that
    nearby keys such as (seed, epoch) and (seed, epoch + 1) give unrelated streams."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def coin_flip(seed: int, epoch: int, index: int) -> bool:
    """A fair coin for item `index` in `epoch`; used for random horizontal flips."""
    return bool(derive_seed(seed, epoch, index) & 1)


class EpochFlipMixin:
    """Adds `set_epoch(epoch)` and `_should_flip(index)` to a dataset with `flip` and `seed` attributes.

    The training loader calls `set_epoch` before each epoch (before the workers are started, so the
    workers see it), so an item gets a fresh flip each epoch yet a resumed run flips exactly as the
    uninterrupted one would.
    """

    flip: bool = False
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _should_flip(self, index: int) -> bool:
        return self.flip and coin_flip(self.seed, self.epoch, index)
