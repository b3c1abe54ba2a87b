"""The convergence study driver (issue 20): its step interpolation, its published schema, and (slow)
the whole pipeline at smoke scale with a resume and a publish."""
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, load_script


def _driver():
    return load_script("scripts/study_convergence.py")


def test_steps_to_reach_interpolates_on_log_steps():
    conv = _driver()
    curve = {1000: (10.0, 9.0, 11.0), 2000: (6.0, 5.0, 7.0), 4000: (4.0, 3.5, 4.5)}
    assert conv.steps_to_reach(curve, 8.0) == pytest.approx(math.sqrt(1000 * 2000))   # halfway, in log-steps
    assert conv.steps_to_reach(curve, 6.0) == pytest.approx(2000)
    assert conv.steps_to_reach(curve, 11.0) == 1000.0          # already there at the first checkpoint
    assert conv.steps_to_reach(curve, 3.0) is None              # never reached


def test_rows_are_published_per_model_seed_step_and_budget():
    conv = _driver()
    row = {"model": "elit-mb-s1@4000", "latents_per_group": 4, "fid": 50.0, "fd_fmnist": 20.0,
           "num_samples": 2000, "steps": 40, "gflops_per_image": 1.0}
    (out,) = conv.results([row])
    assert (out["model"], out["seed"], out["step"], out["budget"], out["fid"], out["fd_fmnist"]) == \
        ("elit-mb", 1, 4000, 4, 50.0, 20.0)
    speed = conv.speedups(conv.results([
        {**row, "model": f"{m}-s{s}@{step}", "latents_per_group": None, "fid": fid}
        for m, s, step, fid in [("dit", 0, 1000, 100), ("dit", 0, 2000, 80), ("dit", 1, 2000, 84),
                                ("elit-mb", 0, 1000, 82), ("elit-mb", 0, 2000, 70)]]))
    assert speed[0].startswith("fid: DiT at 2000 steps = 82.00 (seeds 80.00-84.00)")
    assert "reaches it at ~1000 steps (2.00x fewer)" in speed[0]
    # seed by seed (only seed 0 has both models): ELIT-MB goes 82 -> 70 and passes seed 0's DiT (80)
    # a sixth of the way from 1000 to 2000 in log-steps: 1000 * 2 ** (1 / 6) = 1122
    assert speed[1] == "  seed 0: DiT at 2000 = 80.00; ELIT-MB reaches it at ~1122 steps (1.78x fewer)"
    # the other way round: DiT (mean 100 at 1k, 82 at 2k) never gets down to ELIT-MB's 70
    assert speed[2] == "fid: ELIT-MB at 2000 steps = 70.00 (seeds 70.00-70.00); DiT does not reach it by 2000 steps"
    assert speed[3] == "  seed 0: ELIT-MB at 2000 = 70.00; DiT does not reach it by 2000 steps"
    assert speed[4].startswith("fd_fmnist: DiT at 2000 steps = 20.00")   # then the same for the other metric


@pytest.mark.slow
def test_convergence_smoke_runs_resumes_and_publishes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_convergence.py"), "--out", str(tmp_path), "--smoke"]
    subprocess.run(cmd, check=True, cwd=REPO)
    rows = json.loads((tmp_path / "report" / "fashion-mnist-convergence.json").read_text())
    # 2 seeds x 2 checkpoints x (DiT full + ELIT-MB full and J~ = 4)
    assert len(rows) == 12 and {(r["model"], r["budget"]) for r in rows} == {("dit", None), ("elit-mb", None),
                                                                             ("elit-mb", 4)}
    assert {r["seed"] for r in rows} == {0, 1} and {r["step"] for r in rows} == {2, 4}
    assert all(r["fd_fmnist"] > 0 for r in rows)
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "[train] dit-s0: done" in out and "12 of its rows already measured, 0 to go" in out
    # measured again by two shards: each takes its half of the plan, the report merges both files. Shard 1
    # starts only when shard 0 is done (as a loaded machine can start it), and still finds its own half.
    (tmp_path / "rows-0.json").unlink()
    for k in (0, 1):
        subprocess.run(cmd + ["--measure-only", "--shard", f"{k}/2"], check=True, cwd=REPO)
    halves = [json.loads((tmp_path / f"rows-{k}.json").read_text()) for k in (0, 1)]
    assert sorted(len(h) for h in halves) == [6, 6]
    subprocess.run(cmd + ["--report-only"], check=True, cwd=REPO)     # shards leave the report to this
    again = json.loads((tmp_path / "report" / "fashion-mnist-convergence.json").read_text())
    key = lambda r: (r["model"], r["seed"], r["step"], r["budget"])   # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in rows]
    assert [r["fd_fmnist"] for r in again] == pytest.approx([r["fd_fmnist"] for r in rows], rel=1e-3)
    dest = tmp_path / "docs"
    subprocess.run(cmd + ["--report-only", "--publish", str(dest)], check=True, cwd=REPO)
    assert json.loads((dest / "fashion-mnist-convergence.json").read_text()) == again
    assert (dest / "fashion-mnist-convergence" / "convergence-fd_fmnist-vs-steps.png").is_file()
    # --only: just the missing rows of the matching checkpoints (both budgets), into a file of their own
    gone = {(r["model"], r["latents_per_group"]) for r in halves[1]}
    want = {(m, b) for m, b in gone if m.startswith("elit-mb-s1@") or m == "dit-s0@4"}
    assert want and want != gone
    (tmp_path / "rows-1.json").unlink()
    subprocess.run(cmd + ["--measure-only", "--only", "elit-mb-s1@*,dit-s0@4"], check=True, cwd=REPO)
    only = json.loads((tmp_path / "rows-only-elit_mb_s1_dit_s0_4.json").read_text())
    assert sorted((r["model"], r["latents_per_group"] or 0) for r in only) == sorted((m, b or 0) for m, b in want)


def test_convergence_doc_table_is_the_published_rows():
    """docs/results/fashion-mnist-convergence.md's table is what `--publish` generates from the JSON:
    a number edited by hand fails here."""
    conv = _driver()
    res = REPO / "docs" / "results"
    text = (res / "fashion-mnist-convergence.md").read_text()
    rows = json.loads((res / "fashion-mnist-convergence.json").read_text())
    assert {"model", "seed", "step", "fid", "fd_fmnist", "budget"} <= set(rows[0])
    table = text.split("<!-- convergence-table:start -->\n")[1].split("<!-- convergence-table:end -->")[0]
    assert table == conv.doc_table(rows)
    assert len(table.splitlines()) == len(rows) + 2     # header, separator, then a line per row


def test_the_scale_point_sits_beside_the_width_64_rows_and_says_which_way_the_gap_goes():
    conv = _driver()
    row = {"latents_per_group": None, "num_samples": 2000, "steps": 40, "gflops_per_image": 1.0}
    scale = conv.scale_results([{**row, "model": "dit-w128-s0@4000", "fid": 30.0, "fd_fmnist": 10.0},
                                {**row, "model": "elit-mb-w128-s0@4000", "fid": 36.0, "fd_fmnist": 9.0},
                                {**row, "model": "elit-mb-w128-s0@4000", "latents_per_group": 4, "fid": 37.0,
                                 "fd_fmnist": 9.5, "gflops_per_image": 0.4}])
    assert {(r["model"], r["width"], r["budget"]) for r in scale} == {("dit", 128, None), ("elit-mb", 128, None),
                                                                      ("elit-mb", 128, 4)}
    base = conv.results([{**row, "model": f"{m}-s{seed}@{step}", "fid": fid, "fd_fmnist": 12.0}
                         for m, seed, step, fid in [("dit", 0, 4000, 40.0), ("elit-mb", 0, 4000, 60.0),
                                                    ("dit", 1, 4000, 41.0), ("dit", 0, 8000, 27.0)]])
    text = conv.scale_section(scale, base)
    assert "| 64 | dit | full | 1.00 | 40.00 | 12.00 |" in text
    assert "| 128 | elit-mb | 4 | 0.40 | 37.00 | 9.50 |" in text
    assert "41.00" not in text and "27.00" not in text     # other seeds and steps stay out
    assert "- Width 64: ELIT-MB / DiT at full budget: fid 1.50x, fd_fmnist 1.00x." in text
    assert "- Width 128: ELIT-MB / DiT at full budget: fid 1.20x, fd_fmnist 0.90x." in text
    assert "FID deficit shrinks with width: 1.50x at width 64, 1.20x at width 128." in text
    assert "- Width 64: ELIT-MB's full budget costs 1.00x DiT's sampling GFLOPs, FID +20.00 points." in text
    assert ("- Width 128: ELIT-MB at J~ = 4 costs 0.40x its full budget (0.40x DiT's): fid +1.00, fd_fmnist +0.50."
            in text)
    assert "- Width 64, seeds 0, 1 at this step: FID spread dit 1.00." in text     # one seed of elit-mb: no spread
    assert conv.family("elit-mb-w128-s0@4000") == conv.family("elit-mb-s1") == "elit-mb"
    assert conv.scale_section([], base) == "Not measured yet.\n"


def test_the_doc_scale_section_is_the_published_scale_rows():
    conv = _driver()
    section = load_script("scripts/docs_tables.py").section
    res = REPO / "docs" / "results"
    scale = res / "fashion-mnist-scale.json"
    body = conv.scale_section(json.loads(scale.read_text()) if scale.is_file() else [],
                              json.loads((res / "fashion-mnist-convergence.json").read_text()))
    assert section((res / "fashion-mnist-convergence.md").read_text(), "convergence-scale") == body


@pytest.mark.slow
def test_the_scale_point_carries_its_progress_to_a_new_session_and_publishes(tmp_path):
    """--width at smoke scale: train, measure, keep the rows and models; a new OUT (the next session)
    trains nothing and measures nothing again, and --publish fills the doc's section."""
    kept, models = tmp_path / "progress", tmp_path / "models"
    base = [sys.executable, str(REPO / "scripts" / "study_convergence.py"), "--smoke", "--width", "48", "--jobs", "1",
            "--progress", str(kept), "--models", str(models)]
    first = base + ["--out", str(tmp_path / "one")]
    subprocess.run(first, check=True, cwd=REPO, capture_output=True)
    subprocess.run(first + ["--save-progress"], check=True, cwd=REPO)
    assert (models / "elit-mb-w48-s0" / "model.safetensors").is_file() and (kept / "rows.json").is_file()
    second = base + ["--out", str(tmp_path / "two")]
    log = subprocess.run(second, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "dit-w48-s0: the published model" in log and "[train] elit-mb-w48-s0: done" in log
    assert "3 of its rows already measured, 0 to go" in log
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fashion-mnist-convergence.md").write_text("# x\n<!-- convergence-scale:start -->\n<!-- convergence-scale:end -->\n")
    subprocess.run(second + ["--report-only", "--publish", str(docs)], check=True, cwd=REPO, capture_output=True)
    rows = json.loads((docs / "fashion-mnist-scale.json").read_text())
    assert {(r["model"], r["width"], r["budget"], r["step"]) for r in rows} == {
        ("dit", 48, None, 4), ("elit-mb", 48, None, 4), ("elit-mb", 48, 4, 4)}
    assert "| 48 | elit-mb | 4 |" in (docs / "fashion-mnist-convergence.md").read_text()
