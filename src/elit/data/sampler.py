"""A seeded, rank-sharded, exactly resumable batch sampler, and an endless loader built on it.

Order of an epoch: a permutation drawn from a generator seeded by (seed, epoch) only. With K ranks
and per-rank batch b (global batch G = K*b), rank r takes every K-th item of that permutation,
starting at r, and cuts it into batches of b. So global batch j -- the union over ranks of their
j-th batches -- is exactly items [j*G, (j+1)*G) of the permutation: K ranks with batch b see the
same batches, in the same order, as 1 rank with batch K*b. A run can therefore resume on a
different number of GPUs as long as the global batch size is unchanged.

The state is (epoch, position): position counts batches *handed to the training loop* this epoch
(not batches prefetched by DataLoader workers), so a resumed run continues with exactly the next
batch.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from elit.data.seeding import derive_seed
from elit.errors import UserError


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableSampler:
    """Batch sampler (use as `DataLoader(batch_sampler=...)`) yielding this rank's index lists.

    drop_last=True (training): each epoch is cut to a whole number of global batches, so every rank
    gets the same number of full batches and the K-ranks == 1-rank equivalence above is exact.
    drop_last=False (evaluation): the permutation is padded by wrapping around to a multiple of K (as
    torch's DistributedSampler does), so every item is seen and the last batch may be short.
    Iterating yields the remaining batches of the current epoch and does not change the state; call
    `set_epoch` (or use `InfiniteLoader`, which also tracks `position`).
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True, drop_last: bool = True):
        if rank is None or world_size is None:  # default to torch.distributed's, else one process
            dist_rank, dist_world = _dist_rank_world()
            rank = dist_rank if rank is None else rank
            world_size = dist_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size <= 0 or num_items <= 0:
            raise UserError(f"need positive batch_size and num_items, got {batch_size} and {num_items}")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.global_batch_size = self.batch_size * self.world_size
        if self.drop_last and self.num_items < self.global_batch_size:
            raise UserError(f"{self.num_items} items cannot fill one global batch of {self.global_batch_size} "
                             f"({self.world_size} ranks x {self.batch_size}) with drop_last=True")
        self.epoch, self.position = 0, 0

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """All ranks' items of `epoch`, in global order (before sharding)."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_items, generator=g)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`."""
        order = self.epoch_order(epoch)
        if self.drop_last:
            order = order[: self.num_items // self.global_batch_size * self.global_batch_size]
        else:
            padded = math.ceil(self.num_items / self.world_size) * self.world_size
            order = torch.cat([order] * math.ceil(padded / self.num_items))[:padded]
        mine = order[self.rank:: self.world_size].tolist()
        return [mine[i: i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.num_items // self.global_batch_size
        return math.ceil(math.ceil(self.num_items / self.world_size) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch)[self.position:])

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_items": self.num_items,
                "global_batch_size": self.global_batch_size, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Restore (epoch, position). The order must be reproducible, so the seed, data size, global
        batch size, shuffle and drop_last must match (the number of ranks may differ)."""
        for key in ("seed", "num_items", "global_batch_size", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise UserError(f"cannot resume the data order: checkpoint has {key}={state[key]!r}, "
                                 f"this run has {getattr(self, key)!r}")
        if not 0 <= state["position"] <= len(self):
            raise UserError(f"checkpoint data position {state['position']} outside this epoch's {len(self)} batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class InfiniteLoader:
    """Endless batches for the training loop, epoch after epoch, resumable exactly.

    Each epoch gets a fresh DataLoader over the sampler's remaining batches (after calling the
    dataset's `set_epoch`, so random flips differ per epoch yet replay on resume). `position` is
    advanced only when a batch is handed out, so `state_dict()` taken after a training step says
    exactly which batch comes next whatever the workers had prefetched. The DataLoader is given its
    own seeded generator, so iterating never draws from the global torch RNG (which the trainer
    checkpoints for noise and time sampling).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, *, num_workers: int = 0,
                 pin_memory: bool = False, collate_fn=None, prefetch_factor: int | None = None):
        if len(dataset) != sampler.num_items:
            raise UserError(f"sampler is for {sampler.num_items} items but the dataset has {len(dataset)}")
        self.dataset, self.sampler = dataset, sampler
        self.loader_kwargs = {"num_workers": num_workers, "pin_memory": pin_memory, "collate_fn": collate_fn}
        if num_workers > 0 and prefetch_factor is not None:
            self.loader_kwargs["prefetch_factor"] = prefetch_factor

    def __iter__(self) -> Iterator:
        s = self.sampler
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(s.epoch)
            g = torch.Generator().manual_seed(derive_seed(s.seed, s.epoch, s.rank))  # worker seeds only
            loader = DataLoader(self.dataset, batch_sampler=list(s), generator=g, **self.loader_kwargs)
            for batch in loader:
                s.position += 1
                yield batch
            s.set_epoch(s.epoch + 1)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Call before starting to iterate."""
        self.sampler.load_state_dict(state)


def infinite_batches(dataset: Dataset, batch_size: int, *, seed: int = 0, rank: int | None = None,
                     world_size: int | None = None, num_workers: int = 0, drop_last: bool = True,
                     **loader_kwargs) -> InfiniteLoader:
    """The training loader in one call: `batch_size` is per rank; rank/world_size default to
    torch.distributed's when it is initialised."""
    sampler = ResumableSampler(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size,
                               drop_last=drop_last)
    return InfiniteLoader(dataset, sampler, num_workers=num_workers, **loader_kwargs)
