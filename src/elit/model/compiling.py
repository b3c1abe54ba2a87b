"""torch.compile for an elastic model: compile the repeated blocks, not the whole forward.

Compiling the whole forward specializes the graph on the budget (the number of kept latents is a
Python int that shapes every core tensor), so each budget is a new graph of the entire model, and
after torch's recompile limit (8) the rest fall back to eager without a word. Compiling each
repeated block with a dynamic sequence length instead gives graphs that every block, every budget
and every batch size share: the compile time is bounded by the few block kinds (a backbone's block
class, the Read and the Write), not by the budgets. The glue between blocks (grouping, slicing the
kept latents) is a handful of cheap reshapes and stays eager.

Modules are compiled in place (`nn.Module.compile`): parameter names, state dicts and checkpoints
are unchanged, and `model.compiled_modules` lists what was compiled.
"""
from __future__ import annotations

import torch.nn as nn


def compile_blocks(model: nn.Module, dynamic: bool = True, **options) -> nn.Module:
    """Compile `model`'s repeated blocks (and its Read / Write) in place; returns the model.

    model: an ELITModel (or anything with `.backbone.shard_units()` and an optional `.interface`).
    dynamic: True traces with symbolic batch and sequence sizes from the first call, so budgets and
    batch sizes (CFG doubles the batch) reuse one graph; False specializes on the first shapes.
    options: passed on to torch.compile (e.g. mode="max-autotune" on a GPU).
    """
    units = list(model.backbone.shard_units())
    interface = getattr(model, "interface", None)
    if interface is not None:
        units += [interface.read, interface.write]
    for unit in units:
        unit.compile(dynamic=dynamic, **options)
    model.compiled_modules = [type(u).__name__ for u in units]
    return model
