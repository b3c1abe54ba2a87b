"""The process group from the environment, for training and for sampling alike.

Initialised from env vars (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which torchrun,
`accelerate launch` and most SLURM wrappers set; a bare SLURM step (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID) works too once MASTER_ADDR/MASTER_PORT are exported. No env vars: one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from elit.errors import UserError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return default


def init_distributed(device: str = "auto") -> DistEnv:
    world = env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    rank = env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("system.device=cuda but CUDA is not available; use system.device=cpu or auto")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise UserError(f"WORLD_SIZE={world} but MASTER_ADDR is not set; launch with torchrun "
                             f"(torchrun --nproc_per_node=K -m elit train ...) or export MASTER_ADDR/MASTER_PORT")
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                device_id=dev if use_cuda else None)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)
