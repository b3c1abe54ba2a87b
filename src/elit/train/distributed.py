"""DDP / FSDP2 wrapping, full state dicts, clean shutdown. The process group itself comes from the
environment (elit._distributed, shared with distributed sampling): DistEnv and init_distributed are
re-exported here for the training code.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from elit._distributed import DistEnv, init_distributed  # noqa: F401  (re-exported)


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
