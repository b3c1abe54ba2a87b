"""Model folders written before the config redesign (format elit-model/1) load and compute exactly
what they computed then (tests/data/legacy-v1/README.md says how they were made)."""
import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file

import elit

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy-v1"


@pytest.mark.parametrize("name", ["elit-dit", "elit-dit-compat", "dit"])
def test_legacy_folders_load_with_identical_outputs(name, tmp_path):
    assert json.loads((LEGACY / name / "config.json").read_text())["format"] == "elit-model/1"
    io = load_file(str(LEGACY / "io.safetensors"))
    model = elit.load_pretrained(LEGACY / name)
    expected = {k.split("/")[1]: v for k, v in io.items() if k.startswith(name + "/")}
    with torch.no_grad():
        for key, out in expected.items():
            budget = None if key in ("out", "budget_full") else int(key.removeprefix("budget_"))
            assert torch.equal(model(io["x"], io["t"], io["y"], budget=budget), out), key
    # saved again, it is a format-2 folder with the same config
    elit.save_pretrained(model, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format"] == "elit-model/2"
    assert elit.load_pretrained(tmp_path / "again").config == model.config
