"""The issue-7 study driver end to end at smoke scale with two training and two sweep
processes (slow: about a minute on 2 cores; run with -m slow)."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_study_smoke_runs_end_to_end_and_resumes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_fmnist.py"), "--out", str(tmp_path), "--smoke",
           "--device", "cpu", "--jobs", "2"]
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
    assert "[train] dit: done" in out and f"[sweep] {len(rows)} rows measured, 0 to go" in out
    assert len(rows) == len(json.loads((tmp_path / "plan-0.json").read_text())) + \
        len(json.loads((tmp_path / "plan-1.json").read_text()))


def test_committed_results_match_the_committed_models():
    """docs/results: every row's GFLOPs recompute from the committed model, and the rows file the
    driver resumes from holds the same numbers as the published JSON."""
    import elit
    from elit.sampling import sampling_gflops
    res = REPO / "docs" / "results"
    published = json.loads((res / "fashion-mnist.json").read_text())
    resumable = json.loads((res / "fashion-mnist" / "rows-0.json").read_text())
    assert len(published) == len(resumable) > 0
    key = lambda r: (r["model"], r["latents_per_group"], r["guidance"], r["scale"])  # noqa: E731
    by_key = {key(r): r for r in resumable}
    configs = {label: elit.load_pretrained(res / "fashion-mnist" / "runs" / label / "model").config
               for label in {r["model"] for r in published}}
    for r in published:
        assert r["num_samples"] >= 2000 and r["fid"] == by_key[key(r)]["fid"]
        assert r["gflops_per_image"] == pytest.approx(sampling_gflops(
            configs[r["model"]], steps=r["steps"], budget=r["latents_per_group"], guidance=r["guidance"],
            weak_budget=r["weak_budget"], scale=r["scale"] or None), rel=1e-9)
