"""The issue-7 study driver end to end at smoke scale (slow: ~10 min on 2 cores; run with -m slow)."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_study_smoke_runs_end_to_end_and_resumes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_fmnist.py"), "--out", str(tmp_path), "--smoke",
           "--device", "cpu"]
    subprocess.run(cmd, check=True, cwd=REPO)
    rows = json.loads((tmp_path / "report" / "fashion-mnist.json").read_text())
    models = {r["model"] for r in rows}
    assert models == {"dit", "elit", "elit-mb"}
    mb = [r for r in rows if r["model"] == "elit-mb"]
    assert {r["latents_per_group"] for r in mb} == {1, 2, 4, 8, 16}
    assert {r["guidance"] for r in mb} == {"none", "cfg", "ccfg", "ag"}
    assert all(r["num_samples"] == 16 and r["gflops_per_image"] > 0 for r in rows)
    for name in ("samples-dit.png", "samples-elit-mb.png", "fd_fmnist-vs-gflops.png", "tables.md"):
        assert (tmp_path / "report" / name).is_file()
    # a rerun finds everything done: no training, no new rows
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "[train] dit: done" in out and f"resuming: {len(rows)} rows" in out
