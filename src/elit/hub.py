"""save_pretrained / load_pretrained: a folder with config.json + model.safetensors.

Writes go to a temporary sibling folder that is renamed into place, so a crash never leaves a
half-written model where a complete one is expected.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import torch
from safetensors.torch import load_file, save_file

from elit.jsonio import read_json
from elit.models import ELITModel, ModelConfig

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT = "elit-model/1"


def save_pretrained(model: ELITModel, path, extra: dict | None = None) -> pathlib.Path:
    """Write `model` (its config and float weights) to folder `path`, replacing it atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        meta = {"format": FORMAT, "model": model.config.to_dict(), **(extra or {})}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_config(path) -> tuple[ModelConfig, dict]:
    path = pathlib.Path(path)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{path} is not an elit model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                f"train one with `elit train` or convert one with `elit convert`)")
    meta = read_json(cfg_file, "model config")
    if meta.get("format") != FORMAT or "model" not in meta:
        raise ValueError(f"{cfg_file} is not an elit model config (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    return ModelConfig.from_dict(meta["model"]), meta


def load_pretrained(path, device="cpu", dtype: torch.dtype | None = None) -> ELITModel:
    """Load a folder written by `save_pretrained` (or `elit train` / `elit convert`), in eval mode."""
    config, _ = read_config(path)
    model = ELITModel(config)
    try:
        state = load_file(str(pathlib.Path(path) / WEIGHTS_NAME))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise ValueError(f"cannot read {pathlib.Path(path) / WEIGHTS_NAME}: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not match its config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    model = model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model.eval()
