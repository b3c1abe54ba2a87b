"""What a study that spans several sessions of a small machine carries from one session to the next.

A session's study folder (OUT) does not outlive it, while a training of hours may not finish inside
one. So before a session ends, the study keeps in the repository: its measured rows, each unfinished
training's newest checkpoint (with its config.yaml and log.jsonl), and each finished training's EMA
model (published: config.json + model.safetensors). The next session restores them into its OUT:
`elit train` resumes from the kept checkpoint, and a published model counts as trained.
Used by study_front.py and study_convergence.py (--width); the rows' format is the caller's.
"""
from __future__ import annotations

import pathlib
import shutil

MODEL_FILES = ("config.json", "model.safetensors")   # the weights last: their presence means done


def is_trained(run: pathlib.Path) -> bool:
    return (run / "model" / "model.safetensors").is_file()


def publish_model(run: pathlib.Path, dest: pathlib.Path) -> None:
    """A run's EMA model into dest (config.json + model.safetensors), unless it is already there."""
    from elit._io import copy_file
    for name in MODEL_FILES:
        src, target = run / "model" / name, dest / name
        if src.is_file() and not (target.is_file() and target.read_bytes() == src.read_bytes()):
            copy_file(src, target)


def reuse_published(runs: pathlib.Path, published: pathlib.Path, names) -> None:
    """A model already published (trained in an earlier session, whose run folder is gone) is the
    run's result: copied into runs/<name>/model, it is not trained again. A run's own model stays."""
    from elit._io import copy_file
    for name in names:
        src, dest = published / name, runs / name / "model"
        if (src / "model.safetensors").is_file() and not (dest / "model.safetensors").is_file():
            for file in MODEL_FILES:
                copy_file(src / file, dest / file)
            print(f"[train] {name}: the published model in {src} is used, not retrained", flush=True)


def keep_runs(runs: pathlib.Path, kept_runs: pathlib.Path, models: pathlib.Path) -> None:
    """Each finished run's model is published to models/<run> (and its kept checkpoint dropped); each
    unfinished run's newest checkpoint goes to kept_runs/<run>, with its config and log, replacing
    the one kept before (only once the new one is complete)."""
    from elit._io import copy_file
    from elit.train.checkpoint import list_checkpoints
    for run in sorted(runs.glob("*-s*")):
        kept = kept_runs / run.name
        if is_trained(run):
            publish_model(run, models / run.name)
            shutil.rmtree(kept, ignore_errors=True)
            continue
        found = list_checkpoints(run)
        if not found or (kept / "checkpoints" / found[-1].name).is_file():
            continue
        for name in ("config.yaml", "log.jsonl", f"checkpoints/{found[-1].name}"):
            copy_file(run / name, kept / name)
        for old in list_checkpoints(kept)[:-1]:
            old.unlink()
        size = (kept / "checkpoints" / found[-1].name).stat().st_size / 2**20
        print(f"[progress] {run.name}: {found[-1].name} ({size:.0f} MiB) kept in {kept}", flush=True)


def restore_runs(kept_runs: pathlib.Path, runs: pathlib.Path) -> None:
    """Each kept checkpoint whose run has neither a model nor a newer checkpoint of its own goes back
    into runs/<run> (its config and log come along, the log cut at the checkpoint by the resume)."""
    from elit._io import copy_file
    from elit.train.checkpoint import list_checkpoints
    for kept in sorted(kept_runs.glob("*-s*")):
        run, found = runs / kept.name, list_checkpoints(kept)
        own = list_checkpoints(run)
        if not found or is_trained(run) or (own and own[-1].name >= found[-1].name):
            continue
        for name in ("config.yaml", "log.jsonl", f"checkpoints/{found[-1].name}"):   # the checkpoint last
            copy_file(kept / name, run / name)
        print(f"[progress] {kept.name}: resumes from the kept {found[-1].name}", flush=True)


def keep_rows(rows: list[dict], dest: pathlib.Path) -> None:
    from elit._io import write_json
    if rows:
        write_json(dest / "rows.json", rows)


def restore_rows(src: pathlib.Path, out: pathlib.Path) -> None:
    """The kept rows as OUT/rows-carried.json, where the study's own row loader finds them."""
    from elit._io import copy_file
    if (src / "rows.json").is_file():
        copy_file(src / "rows.json", out / "rows-carried.json")
