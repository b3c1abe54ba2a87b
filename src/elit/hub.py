"""save_pretrained / load_pretrained: a folder with config.json + model.safetensors.

The folder is written beside its destination and renamed into place, so a crash never leaves a
half-written model where a complete one is expected. config.json holds the structured model
config (format elit-model/2); folders written before the config redesign (elit-model/1, a flat
config) still load.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import torch
from safetensors.torch import load_file, save_file

from elit._io import read_json, replace_dir, temp_dir_beside
from elit.errors import MissingInputError, UserError
from elit.model import ELITModel, ModelConfig

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT = "elit-model/2"
READABLE_FORMATS = ("elit-model/1", FORMAT)


def save_pretrained(model: ELITModel, path, extra: dict | None = None) -> pathlib.Path:
    """Write `model` (its config and weights) to folder `path`, replacing it atomically. An
    `elit.make_elastic` wrapper is saved as the ELITModel it holds."""
    if not isinstance(model, ELITModel) and isinstance(getattr(model, "model", None), ELITModel):
        model = model.model
    path = pathlib.Path(path)
    tmp = temp_dir_beside(path)
    try:
        meta = {"format": FORMAT, "model": model.config.to_dict(), **(extra or {})}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_config(path) -> tuple[ModelConfig, dict]:
    """The model config of a model folder, and its whole config.json."""
    path = pathlib.Path(path)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise MissingInputError(f"{path} is not an elit model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                f"train one with `elit train` or convert one with `elit convert`)")
    meta = read_json(cfg_file, "model config")
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS or "model" not in meta:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{cfg_file} is not an elit model config (format {found!r}, expected one of "
                        f"{list(READABLE_FORMATS)})")
    try:
        read = ModelConfig.from_flat if meta["format"] == "elit-model/1" else ModelConfig.from_dict
        return read(meta["model"]), meta
    except ValueError as e:
        raise UserError(f"{cfg_file}: {e}") from None


def load_pretrained(path, device="cpu", dtype: torch.dtype | None = None) -> ELITModel:
    """Load a folder written by `save_pretrained` (or `elit train` / `elit convert`), in eval mode."""
    config, _ = read_config(path)
    with torch.device("meta"):   # no time spent on an initialisation the weights overwrite
        model = ELITModel(config)
    weights = pathlib.Path(path) / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise UserError(f"cannot read {weights}: {e}") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        found = [f"{what} {names[:8]}" for what, names in (("missing", missing), ("unexpected", unexpected),
                                                            ("wrong shapes (file vs config)", wrong)) if names]
        raise UserError(f"weights in {path} do not match its config: {'; '.join(found)}; the folder was edited "
                        f"by hand or mixed from two models: re-export it (elit train / elit convert)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:   # a diverged training run: every sample would be NaN, i.e. a black image
        raise UserError(f"the weights in {path} hold NaN/Inf ({len(bad)} tensors, e.g. {', '.join(bad[:3])}): the "
                        f"training that wrote them diverged; retrain (e.g. with a lower train.lr) or use an "
                        f"earlier checkpoint")
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model.eval()


def read_class_names(path) -> list[str] | None:
    """The class names `elit train` stored with the model (None if it did not, e.g. converted models)."""
    names = read_config(path)[1].get("class_names")
    return list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def resolve_model_config(name_or_dir: str):
    """A preset name (`elit.list_models()`) or a model folder written by save_pretrained -> its ModelConfig."""
    from elit.model import MODEL_PRESETS, preset_config
    from elit.model.presets import suggest
    if name_or_dir in MODEL_PRESETS:
        return preset_config(name_or_dir)
    if pathlib.Path(name_or_dir).is_dir():
        return read_config(name_or_dir)[0]
    raise UserError(f"{name_or_dir!r} is neither a model preset nor a model folder; {suggest(name_or_dir)}")
