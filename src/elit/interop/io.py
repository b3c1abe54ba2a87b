"""Reading reference checkpoints and configs safely, for `elit convert`.

Checkpoints are read with `torch.load(weights_only=True)`: we never run code from a pickle. The
only class allowed besides tensors and containers is `argparse.Namespace`, because both the
authors' and DiT's train.py store their command-line args under "args" in training checkpoints;
a Namespace only holds attributes and runs no code when unpickled.
"""
from __future__ import annotations

import argparse
import pathlib
import pickle

import torch

from elit._io import read_json
from elit.errors import MissingInputError, UserError

# Entries of a training checkpoint, best first: EMA weights are what both references sample with.
STATE_ENTRIES = ("ema", "model", "state_dict")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


def read_weights(path) -> tuple[dict, dict]:
    """A reference state dict from `.pt`/`.pth`/`.ckpt`/`.bin` (pickle) or `.safetensors`.

    Returns (state, info); info says which checkpoint entry was used and carries the training
    args when the checkpoint has them.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"weights {path} is a folder; give the checkpoint file in it (.pt, .pth, .safetensors)"
                        + (" (an elit model folder is converted already: load it with elit.load_pretrained)"
                           if (path / "config.json").is_file() else ""))
    if not path.is_file():
        raise MissingInputError(f"weights file {path} not found")
    info: dict = {"file": path.name}
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors has its own error types for bad headers
            raise UserError(f"cannot read {path} as safetensors: {e}") from None
        return check_finite(state, path), info
    _check_torch_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} cannot be loaded with torch.load(weights_only=True): it needs code to unpickle "
            f"({first}). elit refuses to unpickle arbitrary code. Re-save just the weights, e.g. "
            f"torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file(...)") from None
    except Exception as e:  # truncated or not a torch file at all
        raise UserError(f"cannot read {path} as a PyTorch checkpoint: {type(e).__name__}: {e}") from None
    return unwrap_checkpoint(obj, info)


def _check_torch_file(path: pathlib.Path) -> None:
    """A torch.save file is a zip archive (PK), or a pickle (the PROTO opcode, protocol 2-5, first):
    anything else is not a checkpoint at all, and must not be reported as one that needs code."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return
    raise UserError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle; it starts "
                    f"with {head!r}) nor a .safetensors file; give the checkpoint file itself")


def check_finite(state: dict, where) -> dict:
    """Refuse weights holding NaN/Inf (a diverged training): every image sampled from them is black."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"the weights in {where} hold NaN/Inf ({len(bad)} tensors, e.g. {', '.join(bad[:3])}): the "
                        f"training that wrote them diverged; convert an earlier checkpoint")
    return state


def unwrap_checkpoint(obj, info: dict | None = None) -> tuple[dict, dict]:
    """Find the state dict inside a training checkpoint ({"model", "ema", "opt", "args", ...})."""
    info = {} if info is None else info
    if not isinstance(obj, dict):
        raise UserError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        entry = next((k for k in STATE_ENTRIES if isinstance(obj.get(k), dict)), None)
        if entry is None:
            raise UserError(f"the checkpoint is neither a state dict nor a training checkpoint with one of "
                             f"{list(STATE_ENTRIES)}; its top-level keys are {sorted(map(str, obj))[:12]}")
        info["entry"] = entry
        args = obj.get("args")
        if isinstance(args, argparse.Namespace):
            args = vars(args)
        if isinstance(args, dict):
            info["args"] = {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, type(None)))}
        obj = obj[entry]
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise UserError(f"checkpoint entry {entry!r} holds non-tensor values at {bad[:8]}")
    state = dict(obj)
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            info.setdefault("stripped_prefixes", []).append(prefix)
    return check_finite(state, info.get("file", "the checkpoint")), info


def read_config_file(path) -> dict:
    """Constructor kwargs from a JSON file whose `constructor_kwargs` object holds them."""
    path = pathlib.Path(path)
    meta = read_json(path, "config file")
    if not isinstance(meta, dict) or not isinstance(meta.get("constructor_kwargs"), dict):
        raise UserError(f"{path} must be a JSON object with a 'constructor_kwargs' object holding the "
                         f"reference constructor's keyword arguments")
    return meta["constructor_kwargs"]
