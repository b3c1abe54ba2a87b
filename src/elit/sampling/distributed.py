"""Sampling across processes (`torchrun --nproc_per_node=K -m elit sample|eval ...`) that produces exactly
what one process produces.

Batches, not seeds, are dealt out: the seeds are cut into batches of `batch_size` as one process cuts
them, and batch i goes to rank i % K. Every image is then computed in the very batch one process computes
it in (same companions, same shapes), so its pixels are bit-identical, not merely equal up to float
summation order. Round by round, rank 0 receives the other ranks' batches and yields every batch in
order, as `iter_batches` would; the other ranks compute and send theirs and yield nothing. So a loop
that writes files or feeds metrics runs unchanged on rank 0, and is empty elsewhere.

    shards = Shards.from_env(args.device)          # one process: rank 0 of 1, nothing initialised
    for seeds, labels, images in shards.batches(model, seeds, labels, batch_size=64, **options):
        ...                                        # rank 0: all batches, in order
    if not shards.is_main:
        return
"""
from __future__ import annotations

import atexit

from elit.model.condition import TextCondition
from elit.sampling.solvers import iter_batches, parse_seeds


def _close_group() -> None:
    """At exit: wait for every rank, then close the group. Rank 0 still measures after the others
    have sent their last batch; a rank that tore gloo down before that could abort the job
    ("terminate called without an active exception") after all its work was done."""
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class Shards:
    def __init__(self, rank: int = 0, world: int = 1, device=None):
        self.rank, self.world, self.device = rank, world, device

    @classmethod
    def from_env(cls, device: str | None = None) -> "Shards":
        """The process group torchrun describes (RANK, WORLD_SIZE, ...), or one process. With several
        processes on CUDA, each takes the GPU of its LOCAL_RANK; `device` = None picks CUDA if present."""
        from elit._distributed import env_int, init_distributed
        if env_int("WORLD_SIZE", "SLURM_NTASKS", default=1) <= 1:
            return cls()
        import torch.distributed as dist
        created = not dist.is_initialized()
        kind = "auto" if device is None else ("cuda" if str(device).startswith("cuda") else "cpu")
        env = init_distributed(kind)
        if created:
            atexit.register(_close_group)
        return cls(env.rank, env.world_size, str(env.device))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, seeds: list, labels, batch_size: int) -> tuple[list, list | None]:
        """This rank's seeds (and labels): the batches i with i % world == rank, concatenated."""
        keep = [i for i in range(len(seeds)) if (i // batch_size) % self.world == self.rank]
        return [seeds[i] for i in keep], None if labels is None else [labels[i] for i in keep]

    def batches(self, model, seeds, labels=None, batch_size: int = 64, **options):
        """`iter_batches(model, seeds, labels, batch_size, **options)` over all ranks; see the module doc."""
        if self.world == 1:
            yield from iter_batches(model, seeds, labels, batch_size=batch_size, **options)
            return
        import torch.distributed as dist
        seeds = parse_seeds(seeds)
        if isinstance(labels, TextCondition) and len(labels) == len(seeds) > 1:   # one prompt per seed
            keep = [i for i in range(len(seeds)) if (i // batch_size) % self.world == self.rank]
            my_seeds, my_labels = [seeds[i] for i in keep], labels[keep] if keep else None
        elif labels is not None and not isinstance(labels, (int, TextCondition)) and len(labels) == len(seeds):
            my_seeds, my_labels = self.mine(seeds, list(labels), batch_size)
        else:   # None (seed % num_classes), or one label or prompt for all: the same rule on every rank
            my_seeds, my_labels = self.mine(seeds, None, batch_size)[0], labels
        mine = iter_batches(model, my_seeds, my_labels, batch_size=batch_size, **options) if my_seeds else iter(())
        total = -(-len(seeds) // batch_size)
        for round_start in range(0, total, self.world):
            batch = next(mine) if round_start + self.rank < total else None
            received = [None] * self.world if self.is_main else None
            dist.gather_object(batch, received, dst=0)
            if self.is_main:
                yield from (b for b in received if b is not None)

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (as is with one process)."""
        if self.world == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
