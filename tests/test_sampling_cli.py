"""`elit sample`: files named by seed, grid, .npz, and clean refusals that write nothing."""
import numpy as np
import pytest
import torch
from PIL import Image

import elit
from elit.cli import main
from elit.sampling import sample
from elit.viz import budget_grid, to_uint8
from test_sampling import one_thread, tiny_model  # noqa: F401  (fixture re-used)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    elit.save_pretrained(tiny_model(), path)
    return path


def test_cli_writes_pngs_grid_and_npz(model_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    rc = main(["sample", "--model", str(model_dir), "--seeds", "5-7", "--steps", "2", "--budget", "2",
               "--guidance", "ccfg", "--scale", "0.5", "--batch-size", "2", "--out", str(out), "--grid", "--npz",
               "--device", "cpu"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000005.png", "000006.png", "000007.png", "grid.png"]
    expected = to_uint8(sample(elit.load_pretrained(model_dir), [5, 6, 7], steps=2, budget=2, guidance="ccfg",
                               scale=0.5))
    assert np.array_equal(np.asarray(Image.open(out / "000007.png"))[..., None], expected[2])
    npz = np.load(out / "samples_3x16x16x1.npz")
    assert npz["arr_0"].dtype == np.uint8 and np.array_equal(npz["arr_0"], expected)
    assert npz["arr_1"].tolist() == [5, 6, 7]  # default label: seed % num_classes
    assert "GFLOPs per image" in capsys.readouterr().out
    assert not list(tmp_path.glob(".samples.staging-*"))


@pytest.mark.parametrize("extra, message", [
    (["--guidance", "pag", "--scale", "1"], "unknown guidance"),
    (["--guidance", "ag", "--scale", "1", "--budget", "2", "--weak-budget", "2"], "below the main budget"),
    (["--guidance", "ccfg", "--scale", "1", "--budget", "2", "--weak-budget", "3"], "above the main budget"),
    (["--guidance", "cfg", "--scale", "lots"], "must be a number"),
    (["--steps", "0"], "steps"),
    (["--seeds", "3,1"], "strictly increasing"),
    (["--seeds", "1,1"], "strictly increasing"),
    (["--labels", "99"], "labels must lie"),
])
def test_cli_bad_input_writes_nothing(model_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "samples"
    rc = main(["sample", "--model", str(model_dir), "--out", str(out), "--steps", "2", "--device", "cpu"] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notamodel").mkdir()
    rc = main(["sample", "--model", str(tmp_path / "notamodel"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not an elit model folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_budget_grid_writes_one_labelled_png(tmp_path):
    rows = [torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1]
    path = budget_grid(rows, ["J~=4  3.2 GFLOPs", "J~=1  1.1 GFLOPs"], tmp_path / "grid.png")
    image = Image.open(path)
    assert image.mode == "L" and image.width > 3 * 64 and image.height >= 2 * 64
    # The label column is not blank: text was drawn left of the images.
    left = np.asarray(image)[:, :40]
    assert left.min() < 128
    rgb = budget_grid([torch.zeros(1, 3, 8, 8)], ["rgb"], tmp_path / "rgb.png")
    assert Image.open(rgb).mode == "RGB"
    with pytest.raises(ValueError):
        budget_grid(rows, ["only one label"], tmp_path / "bad.png")


def test_a_fixed_thread_count_samples_the_same_bytes_every_time(model_dir, tmp_path):
    """The deterministic mode (docs/sampling.md): `--threads N` (or ELIT_THREADS) fixes the count,
    the command line says so once, the run records it, and two runs write identical files."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ELIT_THREADS")}
    outs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "elit", "sample", "--model", str(model_dir), "--seeds", "0-3", "--steps", "3",
               "--threads", "2", "--out", str(tmp_path / name)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert "using 2 CPU threads (--threads)" in res.stderr
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.png"))})
    assert len(outs[0]) == 4 and outs[0] == outs[1]
    assert json.loads((tmp_path / "a" / "sampling.json").read_text())["threads"] == 2
