"""What an `elit train --out DIR` folder may hold, and reading its log back.

A run folder holds config.yaml, log.jsonl, checkpoints/, samples/, model/ and tensorboard/ (plus
hidden temporaries, and the main job's budget_grid.png). Anything else means DIR belongs to someone else: training into it would
overwrite their config.yaml and append to their log, so it is refused before anything is written.
"""
from __future__ import annotations

import json
import pathlib
import sys

import yaml

from elit._io import write_text
from elit.errors import UserError
from elit.train.checkpoint import list_checkpoints

# budget_grid.png: what scripts/main_job.sh writes into its run folder after training.
RUN_ENTRIES = ("config.yaml", "log.jsonl", "checkpoints", "samples", "model", "tensorboard", "budget_grid.png",
               "finetune.json")   # elit finetune's record of its teacher


def _differences(old: dict, new: dict) -> list[str]:
    """What makes a run another run: its model or its data (train settings may change, as on resume).
    The model is compared in the one spelling, whichever a run folder's config.yaml was written in."""
    from elit.train.config import config_differences, model_config
    try:
        model = model_config(dict(old.get("model") or {})).to_dict()
    except ValueError as e:
        return [f"its model config does not read ({e})"]
    return (config_differences(model, new.get("model"), "model.")
            + config_differences(old.get("data"), new.get("data"), "data."))


def check_run_folder(out, config: dict) -> None:
    """Refuse an --out that is a file, or a folder holding anything but an elit run of this config.
    (A folder with checkpoints is checked further by the resume, which compares the model.)"""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run (new, or one of an earlier run)")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in RUN_ENTRIES)
    if foreign:
        raise UserError(f"--out {out} is not an elit run folder (it holds {', '.join(foreign[:4])}"
                        f"{', ...' if len(foreign) > 4 else ''}); use a new or empty folder")
    saved = out / "config.yaml"
    if not saved.is_file() or list_checkpoints(out):
        return
    try:
        old = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("model"), dict):
        raise UserError(f"{saved} is not an elit run config; use a new or empty --out")
    diff = _differences(old, config)
    if diff:
        raise UserError(f"--out {out} holds another run, with no checkpoint to resume ({'; '.join(diff[:4])}); "
                        f"use a new --out, or delete {out} to start over")
    print(f"elit train: {out} holds a run of this model with no checkpoint yet (killed or diverged early); "
          f"starting it over")


def read_log(path, up_to_step: int) -> list[str]:
    """The lines of log.jsonl with step <= up_to_step. A torn last line (a run killed mid-write) is
    dropped with a warning; a bad line elsewhere is an error naming the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record.get("step", 0))
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            if number == len(lines):
                print(f"elit train: warning: dropping the torn last line of {path} (a run killed while "
                      f"writing it)", file=sys.stderr)
                continue
            raise UserError(f"{path} line {number} is not a JSON log record; delete that line (or the "
                            f"file) to resume") from None
        if step <= up_to_step:
            kept.append(line)
    return kept


def truncate_log(path, up_to_step: int) -> None:
    """Keep only the records a continuation from `up_to_step` does not rewrite (atomically)."""
    path = pathlib.Path(path)
    if path.is_file():
        write_text(path, "".join(line + "\n" for line in read_log(path, up_to_step)))
