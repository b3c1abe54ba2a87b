"""`elit sample --out DIR` keeps DIR one run (issue 18.3, 19.2): the same command resumes, other settings
are refused unless --overwrite, an interrupted run is resumable and refused by `elit fid`, the grid is
not measured, and a model with NaN weights or NaN samples writes nothing."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import elit
from elit.cli import main
from elit.sampling import sample
from elit.viz import to_uint8
from test_sampling import tiny_model

MODEL_ARGS = ["--steps", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    elit.save_pretrained(tiny_model(), path)
    return path


def run_sample(model_dir, out, *extra):
    return main(["sample", "--model", str(model_dir), "--out", str(out), *MODEL_ARGS, *extra])


def pngs(folder):
    return sorted(p.name for p in folder.glob("0*.png"))


def test_same_command_resumes_and_more_seeds_extend_the_run(model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert run_sample(model_dir, out, "--seeds", "0-3") == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    time.sleep(0.01)
    assert run_sample(model_dir, out, "--seeds", "0-5", "--batch-size", "2") == 0   # batch size changes no image
    assert "4 of 6 images already in" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in stamps} == stamps   # not redrawn
    assert pngs(out) == [f"{s:06d}.png" for s in range(6)]
    expected = to_uint8(sample(elit.load_pretrained(model_dir), range(6), steps=2))
    assert np.array_equal(np.asarray(Image.open(out / "000005.png"))[..., None], expected[5])
    record = json.loads((out / "sampling.json").read_text())
    assert record["pending"] == [] and record["images"] == {str(s): s % 10 for s in range(6)}


def test_other_settings_are_refused_unless_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert run_sample(model_dir, out, "--seeds", "0-3", "--budget", "2") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert run_sample(model_dir, out, "--seeds", "0-3", "--budget", "4") == 2
    err = capsys.readouterr().err
    assert "holds samples of other settings" in err and "budget 2" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before          # nothing touched
    assert run_sample(model_dir, out, "--seeds", "0-1", "--budget", "4", "--overwrite") == 0
    assert pngs(out) == ["000000.png", "000001.png"]                         # the budget-2 images are gone
    assert "budget 4" in json.loads((out / "sampling.json").read_text())["settings"]["plan"]
    # The same seed with another label is another image: refused.
    assert run_sample(model_dir, out, "--seeds", "0-1", "--budget", "4", "--labels", "7") == 2
    assert "seed 0" in capsys.readouterr().err


def test_a_folder_with_other_files_is_refused(model_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"not ours")
    for extra in ([], ["--overwrite"]):
        assert run_sample(model_dir, out, "--seeds", "0-1", *extra) == 2
        assert "holiday.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["holiday.png"]
    (tmp_path / "afile").write_text("x")
    assert run_sample(model_dir, tmp_path / "afile", "--seeds", "0") == 2
    assert "is a file" in capsys.readouterr().err


def test_grid_is_not_measured_by_fid(tmp_path, capsys):
    """The README's `elit sample ... --grid` then `elit fid samples/ ref.npz` (issue 19.2)."""
    out, ref, model_dir = tmp_path / "samples", tmp_path / "ref.npz", tmp_path / "model32"
    elit.save_pretrained(elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1,
                                           tail_depth=1, in_channels=1, num_classes=10, input_size=32), model_dir)
    assert run_sample(model_dir, out, "--seeds", "0-19", "--grid", "--npz") == 0
    assert (out / "grid.png").is_file() and (out / "samples_20x32x32x1.npz").is_file()
    assert main(["ref", "--data", str(out), "--metric-net", "fmnist", "--out", str(ref), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fid", str(out), str(ref), "--metric-net", "fmnist", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_a"] == result["num_b"] == 20 and abs(result["value"]) < 1e-6


def test_grid_columns_are_classes(model_dir, tmp_path):
    """Issue 19.7: with labels seed % 10, column k holds class k (rows of 10, not 8), headed by its name."""
    from elit.viz import budget_grid
    out = tmp_path / "s"
    assert run_sample(model_dir, out, "--seeds", "0-24", "--grid") == 0
    image = {s: torch.from_numpy(np.asarray(Image.open(out / f"{s:06d}.png"))).float()[None] / 127.5 - 1
             for s in range(25)}
    blank = torch.ones(1, 16, 16)
    rows = [torch.stack([image.get(10 * r + c, blank) for c in range(10)]) for r in range(3)]
    expected = budget_grid(rows, ["seeds 0-9", "seeds 10-19", "seeds 20-24"], tmp_path / "expected.png",
                           column_labels=[f"class {k}" for k in range(10)])
    assert np.array_equal(np.asarray(Image.open(out / "grid.png")), np.asarray(Image.open(expected)))


def test_interrupted_run_resumes_without_leftovers(model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "elit", "sample", "--model", str(model_dir), "--out", str(out), "--steps", "60",
           "--seeds", "0-79", "--batch-size", "4", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while len(list(out.glob("0*.png"))) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((out / "sampling.json").read_text())
    written = len(record["images"])
    assert record["pending"] and written >= 4
    assert main(["fid", str(out), str(out), "--metric-net", "fmnist", "--quiet"]) == 2
    assert "unfinished elit sample run" in capsys.readouterr().err
    stale = tmp_path / ".s.staging-k2j4"                              # what older versions left when killed
    stale.mkdir()
    (stale / "000000.png").write_bytes(b"half")
    assert main(cmd[3:]) == 0                                        # the same command
    assert f"{written} of 80 images already in" in capsys.readouterr().out
    assert pngs(out) == [f"{s:06d}.png" for s in range(80)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging folder, no lock
    expected = to_uint8(sample(elit.load_pretrained(model_dir), [0, 79], steps=60))
    assert np.array_equal(np.asarray(Image.open(out / "000079.png"))[..., None], expected[1])
    assert np.array_equal(np.asarray(Image.open(out / "000000.png"))[..., None], expected[0])


def test_nan_weights_and_nan_samples_are_refused(model_dir, tmp_path, capsys):
    broken = tiny_model()
    with torch.no_grad():
        next(broken.parameters())[0] = float("nan")
    elit.save_pretrained(broken, tmp_path / "nan")
    assert main(["sample", "--model", str(tmp_path / "nan"), "--out", str(tmp_path / "a"), *MODEL_ARGS]) == 2
    assert "NaN/Inf" in capsys.readouterr().err and not (tmp_path / "a").exists()
    # Finite weights that overflow: the samples are Inf/NaN (all-black PNGs before).
    huge = tiny_model()
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e30)
    elit.save_pretrained(huge, tmp_path / "huge")
    assert main(["sample", "--model", str(tmp_path / "huge"), "--out", str(tmp_path / "b"), *MODEL_ARGS]) == 2
    assert "NaN/Inf samples" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()     # a failed first run leaves no folder holding only its record
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "000000.png").write_bytes(b"")   # not elit's: refused, and the folder is kept as it was
    assert main(["sample", "--model", str(tmp_path / "huge"), "--out", str(tmp_path / "c"), *MODEL_ARGS]) == 2
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["000000.png"]


def test_progress_counts_denoising_steps(model_dir, tmp_path, capsys):
    """Issue 19.6: the bar moves per denoising step of every batch (2 batches x 3 steps here), not per
    batch of images, and its final line is printed once."""
    assert main(["sample", "--model", str(model_dir), "--out", str(tmp_path / "s"), "--seeds", "0-2",
                 "--batch-size", "2", "--steps", "3", "--device", "cpu"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "sampling 3 images" in err and "6/6" in err and "step/s" in err
    assert sum("100%" in line for line in err.splitlines()) == 1
