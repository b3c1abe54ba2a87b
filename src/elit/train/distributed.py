"""Process group setup from the environment, DDP / FSDP2 wrapping, full state dicts, clean shutdown.

Initialised from env vars (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which torchrun,
`accelerate launch` and most SLURM wrappers set; a bare SLURM step (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID) works too once MASTER_ADDR/MASTER_PORT are exported. No env vars: one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

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


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return default


def init_distributed(device: str = "auto") -> DistEnv:
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
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


def wrap_model(model: nn.Module, parallel: str, env: DistEnv) -> nn.Module:
    """DDP or FSDP2 around `model` (the returned module is the one to call in training). FSDP2
    shards each unit the model names (`model.shard_units()`: its blocks), then the root (embedders,
    Read/Write, final layer), so only one block's full weights exist at a time; `fully_shard` works
    in place, so parameter names do not change."""
    if not env.distributed:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for unit in model.shard_units():
            fully_shard(unit)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor shard (FSDP2) gathered to the full tensor (a collective: call on every rank)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def model_state(model: nn.Module) -> dict:
    """Full (unsharded) state dict on the CPU; a collective under FSDP."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model_state(model: nn.Module, state: dict) -> None:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Call after the model is freed: gloo can abort at interpreter exit if the group is still up."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abort() -> None:
    """Tear the group down after an error, without waiting for ranks that may never arrive."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
