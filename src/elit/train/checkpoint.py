"""Training checkpoints: DIR/checkpoints/step-XXXXXXX.pt, written atomically, the last K kept.

A checkpoint holds everything a continuation needs to equal an uninterrupted run: model, EMA,
optimiser, LR scheduler, step, RNG states, data position, and the run config (to refuse a resume
whose model differs). Writes go to a temporary file in the same folder, are fsynced, then renamed
over the final name (os.replace is atomic on POSIX), so a kill at any moment leaves either the old
set of checkpoints or the old set plus one complete new file.
"""
from __future__ import annotations

import pathlib
import re

import torch

from elit._io import atomic_write
from elit.errors import UserError

FORMAT = "elit-train-checkpoint/1"
_NAME = re.compile(r"^step-(\d{7,})\.pt$")


def checkpoint_dir(out) -> pathlib.Path:
    return pathlib.Path(out) / "checkpoints"


def checkpoint_path(out, step: int) -> pathlib.Path:
    return checkpoint_dir(out) / f"step-{step:07d}.pt"


def list_checkpoints(out) -> list[pathlib.Path]:
    """Complete checkpoint files, oldest first (temporary files of an interrupted write are ignored)."""
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out, step: int, state: dict, keep_last: int) -> pathlib.Path:
    path = checkpoint_path(out, step)
    with atomic_write(path, fsync=True) as f:
        torch.save({"format": FORMAT, "step": step, **state}, f)
    # Only now that the new file is complete may the oldest ones go.
    for old in list_checkpoints(out)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(out) -> None:
    """Temporary files left by a run killed mid-write (never a complete checkpoint)."""
    folder = checkpoint_dir(out)
    if folder.is_dir():
        for p in folder.glob(".step-*.tmp"):
            p.unlink(missing_ok=True)


def newest_checkpoint(out) -> tuple[pathlib.Path, dict] | None:
    """(path, state) of the newest complete checkpoint in run folder `out`, or None."""
    found = list_checkpoints(out)
    return (found[-1], load_checkpoint(found[-1])) if found else None


def load_checkpoint(path: pathlib.Path) -> dict:
    """Read a checkpoint; a damaged file is a ValueError that names it and says how to recover."""
    path = pathlib.Path(path)
    previous = [p for p in list_checkpoints(path.parent.parent) if p != path and p.name < path.name]
    fix = (f"delete it to resume from the previous checkpoint {previous[-1].name}" if previous
           else "delete it to start this run from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, ...: all mean the same to the user
        reason = str(e).split(". ")[0]  # torch appends paragraphs of advice; the first sentence says it
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {reason}); "
                         f"{fix} (the other checkpoints are untouched)") from None
    required = ("format", "step", "model", "ema", "optimizer", "scheduler", "data", "config")
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in required):
        raise UserError(f"checkpoint {path} is not a complete elit training checkpoint; {fix}")
    return state
