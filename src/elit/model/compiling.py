"""torch.compile for an elastic model: compile the repeated blocks, not the whole forward.

The whole forward compiles too (`torch.compile(model)` traces it as one graph, and torch makes the
budget symbolic at the second budget it sees: two graphs in all), but its graph holds the glue
that groups and slices tokens by the budget, and on a CPU that dynamic graph ran slower than eager
for ELIT (docs/performance.md). Compiling each repeated block, and the Read and the Write, with a
dynamic sequence length gives graphs that every block, every budget and every batch size share:
the compile time is bounded by the few module kinds, not by the budgets, and the glue between
them (a handful of reshapes) stays eager.

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
