"""Model folders written before the config redesign (format elit-model/1) load and compute what they
computed then (tests/data/legacy-v1/README.md says how they were made).

The saved outputs were computed on another machine: other CPUs, kernels and thread counts round
differently (about 2e-6 here), so they are compared with a tolerance, SAVED_TOL, that rounding cannot
break. A real change of behaviour does: perturbing one weight by 1% fails the same comparison."""
import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file

import elit

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy-v1"
NAMES = ["elit-dit", "elit-dit-compat", "dit"]
SAVED_TOL = dict(rtol=1e-4, atol=1e-4)     # outputs are O(1): 50x the cross-machine rounding


def saved_outputs(name):
    """(inputs, {budget: output}) as written then; budget None is the full pass."""
    io = load_file(str(LEGACY / "io.safetensors"))
    expected = {}
    for key, out in io.items():
        if key.startswith(name + "/"):
            label = key.split("/")[1]
            expected[None if label in ("out", "budget_full") else int(label.removeprefix("budget_"))] = out
    return (io["x"], io["t"], io["y"]), expected


def mismatches(model, name) -> list:
    """The budgets whose output differs from the saved one beyond SAVED_TOL."""
    inputs, expected = saved_outputs(name)
    with torch.no_grad():
        return [b for b, out in expected.items()
                if not torch.allclose(model(*inputs, budget=b), out, **SAVED_TOL)]


@pytest.mark.parametrize("name", NAMES)
def test_legacy_folders_load_with_the_same_outputs(name, tmp_path):
    assert json.loads((LEGACY / name / "config.json").read_text())["format"] == "elit-model/1"
    model = elit.load_pretrained(LEGACY / name)
    assert len(saved_outputs(name)[1]) >= 1
    assert mismatches(model, name) == []
    # saved again, it is a format-2 folder with the same config
    elit.save_pretrained(model, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format"] == "elit-model/2"
    assert elit.load_pretrained(tmp_path / "again").config == model.config


@pytest.mark.parametrize("name", NAMES)
def test_the_tolerance_still_sees_a_one_percent_weight_change(name):
    """SAVED_TOL is loose enough for rounding, not for a changed model: scale the first block's
    attention input weights (a path every budget takes) by 1.01 and every output must mismatch."""
    model = elit.load_pretrained(LEGACY / name)
    weight = next(p for n, p in model.named_parameters() if "blocks.0." in n and "qkv.weight" in n)
    with torch.no_grad():
        weight.mul_(1.01)
    inputs, expected = saved_outputs(name)
    assert sorted(mismatches(model, name), key=str) == sorted(expected, key=str)
