"""The quality-compute front study (scripts/study_front.py, issue 26): row ids, fronts, the dominance
analysis, `elit plan` on a study table, and (slow) the whole driver at smoke scale."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, load_script
from elit.cli import main as elit_main

front = load_script("scripts/study_front.py", "study_front")


def test_every_planned_row_id_reads_back_to_its_setting():
    ids = set()
    for label in front.MODELS:
        for s in front.grid(label):
            ident = front.row_id(label, 1, s)
            assert front.parse_row_id(ident) == (label, 1, s), ident
            ids.add(ident)
    assert len(ids) == sum(len(front.grid(m)) for m in front.MODELS)      # no two settings share an id
    with pytest.raises(SystemExit, match="cannot read row id"):
        front.parse_row_id("dit-s0:euler-40")


def test_the_grid_covers_what_the_issue_asks():
    elit = front.grid("elit-mb")
    assert {(s["sampler"], s["nfe"]) for s in elit} >= {(k, n) for k in ("euler", "heun") for n in (8, 12, 20, 40)}
    assert {s["budget"] for s in elit} == {None, 1, 2, 4, 8}       # None is J~ = 16, the full budget
    assert len({s["schedule"] for s in elit if s["schedule"]}) >= 2
    assert len({s["cache"] for s in elit if s["cache"]}) >= 2
    assert {s["guidance"] for s in elit} == {"none", "cfg", "ccfg"}
    for label in ("dit", "dit-d3", "dit-d2"):
        g = front.grid(label)
        assert {s["guidance"] for s in g} == {"none", "cfg"} and len({s["cache"] for s in g if s["cache"]}) >= 2
        assert all(s["scale"] == front.SCALE for s in g if s["guidance"] != "none")
    assert sum(len(front.grid(m)) for m in front.MODELS) >= 120


def row(model, gflops, fd, seed=0, **kw):
    s = front.setting(**kw)
    return {"id": front.row_id(model, seed, s), "model": model, "seed": seed, **s,
            "steps": front.sample_options(s)["steps"], "gflops_per_image": gflops, "fd_fmnist": fd, "fid": None}


def test_fronts_levels_and_the_budget_versus_steps_answer():
    rows = [row("dit", 1.0, 30.0, nfe=8), row("dit", 2.0, 20.0, nfe=16), row("dit", 3.0, 25.0, sampler="heun"),
            row("dit", 4.0, 10.0, nfe=32), row("dit-d2", 0.5, 40.0, nfe=8)]
    assert [r["gflops_per_image"] for r in front.pareto(rows, "fd_fmnist")] == [0.5, 1.0, 2.0, 4.0]
    assert front.best_within(rows, "fd_fmnist", 3.5)["gflops_per_image"] == 2.0
    assert front.best_within(rows, "fd_fmnist", 0.4) is None
    assert front.interpolate([(1.0, 30.0), (4.0, 10.0)], 2.0) == pytest.approx(20.0)     # halfway in log GFLOPs
    assert front.interpolate([(1.0, 30.0), (4.0, 10.0)], 8.0) is None
    elit = [row("elit-mb", g, fd, nfe=n) for g, fd, n in ((1.0, 30.0, 10), (4.0, 10.0, 40))]
    elit += [row("elit-mb", 2.0, 15.0, nfe=40, budget=4), row("elit-mb", 1.5, 40.0, nfe=40, budget=1)]
    table, verdicts = front.budget_vs_steps(elit, "fd_fmnist", seeds=(0,))
    # J~ = 4 at 2 GF beats the full budget's 20.0 there; J~ = 1 at 1.5 GF loses to ~22.9
    assert sorted((b, low < steps) for b, _, low, steps in verdicts) == [(1, False), (4, True)]
    assert "| 4 | 40 | 2.00 | 15.00 / 20.00 |" in table
    claim = front.claim_answer(elit)
    assert "- FD-FMNIST: **partly** (lower budget better at J~ = 4: 1 of 2" in claim
    assert "- FID: not measured yet." in claim       # the metric's name, as in every other line


def test_fid_goes_first_to_elit_mb_and_the_claim_rows_then_to_every_front():
    rows = [row("dit", 1.0, 30.0, nfe=8), row("dit", 4.0, 10.0, nfe=32), row("dit", 3.0, 35.0, sampler="heun")]
    rows += [row("elit-mb", 1.0, 30.0, nfe=10), row("elit-mb", 4.0, 10.0, nfe=40),
             row("elit-mb", 1.5, 40.0, nfe=40, budget=1),     # the claim reads it; no front has it
             row("elit-mb", 1.2, 45.0, nfe=10, budget=1),     # neither: a lower budget below the most NFE
             row("elit-mb", 2.0, 5.0, nfe=40, guidance="cfg")]
    chosen = front.fid_choice(rows, seeds=(0,))
    elit_front = [r["id"] for r in front.pareto([r for r in rows if r["model"] == "elit-mb"], "fd_fmnist")]
    assert chosen[:len(elit_front)] == elit_front            # ELIT-MB's front before anything else
    assert rows[5]["id"] in chosen[:len(elit_front) + 3]       # then the claim's rows
    assert chosen.index(rows[5]["id"]) < chosen.index(rows[0]["id"])          # before DiT's front
    assert {rows[0]["id"], rows[1]["id"]} <= set(chosen)
    assert len(chosen) == len(set(chosen)) == len(rows)       # fewer than MIN_FID_ROWS: the rest fills in


def test_the_summary_says_whether_the_study_is_finished():
    planned = front.plan([], seeds=(0,))
    rows = [row(label, 0.1 * (k + 1), 50.0 - 0.1 * k, **{key: s[key] for key in
                ("sampler", "nfe", "budget", "schedule", "guidance", "weak_budget", "cache")})
            for k, (label, _, s) in enumerate(planned)]
    assert [r["id"] for r in rows] == [front.row_id(label, 0, s) for label, _, s in planned]
    half = front.progress_line(rows[: len(rows) // 2], seeds=(0,))
    assert half.startswith(f"**In progress**: {len(rows) - len(rows) // 2} of the {len(rows)} planned rows")
    chosen = front.fid_choice(rows, seeds=(0,))
    assert f"{len(chosen)} of the {len(chosen)} rows chosen for FID without one" in front.progress_line(rows, seeds=(0,))
    for r in rows:
        r["fid"] = 20.0 if r["id"] in chosen else None
    assert front.progress_line(rows, seeds=(0,)) == \
        f"Complete: all {len(rows)} planned rows measured, FID for all {len(chosen)} chosen rows.\n"


def test_dominance_names_the_winner_and_its_margin():
    rows = [row("dit", 1.0, 30.0, nfe=8), row("elit-mb", 1.0, 24.0, nfe=8, budget=1),
            row("dit-d2", 0.5, 50.0, nfe=8)]
    table = front.dominance_table(rows, "fd_fmnist", seeds=(0,))
    line = next(l for l in table.splitlines() if l.startswith("| 1 |"))
    assert line.endswith("s0: ELIT-MB by 6.00 (20%) |"), line
    assert "| 0.5 |" in table and "s0: DiTs of 6/3/2 blocks |" in table


def test_versus_says_where_elit_mb_wins_loses_and_cannot_go():
    rows = [row("dit", 1.0, 30.0, nfe=8), row("dit", 4.0, 10.0, nfe=32), row("dit-d2", 0.5, 40.0, nfe=8),
            row("elit-mb", 1.0, 24.0, nfe=8, budget=1), row("elit-mb", 3.0, 12.0, nfe=24)]
    rows += [dict(r, seed=1, id=r["id"].replace("-s0:", "-s1:")) for r in rows]
    rows += [row("dit", 6.0, 9.0, seed=1, nfe=48)]
    lines = {l.split("**")[1]: l for l in front.versus(rows, "fd_fmnist").splitlines()}
    # <= 1 and 1.5, 2: 24 against 30 (20% of 30); <= 3: 12 against 30 (60%); <= 4.5: 12 against 10 (17% of
    # 12); <= 6 and 9: seed 0 still 12 / 10, seed 1 12 / 9: worse by 17%-25%
    assert "better at <= 1, 1.5, 2, 3 GF (by 20%-60%)" in lines["DiT, fewer steps"]
    assert "worse at <= 4.5, 6, 9 GF (by 17%-25%)" in lines["DiT, fewer steps"]
    assert "no ELIT-MB setting that cheap at <= 0.75 GF" not in lines["DiT, fewer steps"]   # DiT has none either
    assert "no ELIT-MB setting that cheap at <= 0.5, 0.75 GF" in lines["DiTs of 6/3/2 blocks"]
    split = [row("dit", 1.0, 30.0, nfe=8), row("elit-mb", 1.0, 24.0, nfe=8, budget=1),
             row("dit", 1.0, 20.0, seed=1, nfe=8), row("elit-mb", 1.0, 24.0, seed=1, nfe=8, budget=1)]
    assert "tied or the seeds disagree at <= 1, 1.5, 2, 3, 4.5, 6, 9 GF" in front.versus(split, "fd_fmnist")
    assert front.versus([], "fid").count("not measured yet") == len(front.FAMILIES) - 1
    # FID on ELIT-MB's cheap row only: DiT has a setting that cheap, so that is not "only ELIT-MB"
    half = [dict(r, fid=35.0 if r["model"] == "elit-mb" else 25.0 if r["gflops_per_image"] > 3 else None) for r in rows]
    fid = {l.split("**")[1]: l for l in front.versus(half, "fid").splitlines()}["DiT, fewer steps"]
    assert "not measured yet at <= 1, 1.5, 2, 3 GF (one side has no FID that cheap)" in fid
    assert "only ELIT-MB" not in fid and "worse at <= 4.5, 6, 9 GF" in fid


def test_elit_plan_reads_a_study_table_directly(tmp_path, capsys):
    rows = [dict(row("elit-mb", g, fd, nfe=n, budget=b), fid=fid)
            for g, fd, fid, n, b in ((1.0, 30.0, 90.0, 8, None), (2.0, 15.0, None, 40, 4), (1.5, 18.0, 70.0, 40, 1))]
    rows.append(row("dit", 1.0, 5.0, nfe=8))
    table = tmp_path / "front.json"
    table.write_text(json.dumps(rows))
    model = tmp_path / "m"
    import elit
    elit.save_pretrained(elit.create_model("ELIT-DiT-S/2", num_classes=10, in_channels=1, input_size=32, depth=4,
                                           hidden_size=32, num_heads=2, head_depth=1, tail_depth=1), model)
    base = ["plan", "--model", str(model), "--table", str(table), "--target-gflops", "2.5", "--json"]
    assert elit_main(base + ["--table-model", "elit-mb", "--table-seed", "0", "--metric", "fd_fmnist"]) == 0
    choice = json.loads(capsys.readouterr().out)
    assert choice["choice"]["value"] == 15.0 and "--budget 4" in choice["command"]
    assert elit_main(base + ["--table-model", "elit-mb", "--table-seed", "0", "--metric", "fid"]) == 0
    assert json.loads(capsys.readouterr().out)["choice"]["value"] == 70.0      # rows without FID left out
    assert elit_main(base) == 2
    assert "--table-model (dit, elit-mb)" in capsys.readouterr().err
    assert elit_main(base + ["--table-model", "elit-mb", "--table-seed", "3", "--metric", "fid"]) == 2
    assert "no fid rows for model 'elit-mb' seed 3" in capsys.readouterr().err


def test_the_plan_table_says_why_a_level_has_no_choice():
    """Below every measured row, or for a metric not measured yet, the cell carries the planner's
    reason (whole: its brackets closed), not a bare dash."""
    rows = [row("elit-mb", g, fd, nfe=n, budget=b) for g, fd, n, b in ((1.4, 27.0, 20, None), (4.47, 7.0, 8, 4))]
    lines = {l.split(" |")[0]: l for l in front.plan_table(rows).splitlines()}
    below, chosen = lines["| 0.5"], lines["| 6"]
    assert "below the cheapest measured setting (1.4 GFLOPs: euler 20 steps" in below
    assert all(cell.count("(") == cell.count(")") for cell in below.split(" | "))
    assert "budget 4" in chosen and "(7.00, 4.47 GF)" in chosen and "(table has no 'fid' values)" in chosen


@pytest.mark.slow
def test_front_study_smoke_trains_measures_publishes_and_remeasures(tmp_path, monkeypatch):
    out, docs = tmp_path / "s", tmp_path / "docs"
    cmd = [sys.executable, str(REPO / "scripts" / "study_front.py"), "--out", str(out), "--smoke", "--threads", "2"]
    docs.mkdir()
    (docs / "fashion-mnist-front.md").write_text("".join(
        f"<!-- {name}:start -->\n<!-- {name}:end -->\n" for name in front.doc_sections([])))
    subprocess.run(cmd + ["--publish", str(docs)], check=True, cwd=REPO)
    rows = json.loads((docs / "fashion-mnist-front.json").read_text())
    assert {r["model"] for r in rows} == set(front.MODELS) and {r["seed"] for r in rows} == {0, 1}
    assert len({r["id"] for r in rows}) == len(rows) and all(r["fd_fmnist"] > 0 for r in rows)
    assert sum(r["fid"] is not None for r in rows) >= 3
    assert all(set(r) == set(front.PUBLISHED_KEYS) for r in rows)
    doc = (docs / "fashion-mnist-front.md").read_text()
    for name, value in front.SMOKE.items():               # as --smoke sets them: the progress line reads them
        monkeypatch.setattr(front, name, value)
    assert "planned rows" in doc and all(body in doc for body in front.doc_sections(rows).values())
    assert (docs / "fashion-mnist-front" / "front-fd_fmnist.png").is_file()
    assert (docs / "fashion-mnist-front" / "models" / "elit-mb-s1" / "model.safetensors").is_file()
    # one row again from the published models: the same numbers
    target = next(r for r in rows if r["model"] == "elit-mb" and r["budget"] == 1 and r["guidance"] == "none")
    again = subprocess.run(cmd + ["--measure-row", target["id"], "--models", str(docs / "fashion-mnist-front" / "models")],
                           check=True, cwd=REPO, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    again = json.loads(again)
    assert again["fd_fmnist"] == pytest.approx(target["fd_fmnist"], rel=1e-4)
    assert again["gflops_per_image"] == target["gflops_per_image"]
    # resuming in a later session, whose samples are gone (the rows came back from --save-progress) and
    # whose first four chosen rows have no FID yet: nothing left to train or measure, and those FIDs
    # again from images sampled anew, the same numbers
    import shutil
    shutil.rmtree(out / "samples")
    redo = front.fid_choice(rows)[:4]
    for f in out.glob("fid-*.json"):
        f.write_text(json.dumps([r for r in json.loads(f.read_text()) if r["id"] not in redo]))
    fids = {r["id"]: r["fid"] for r in rows if r["fid"] is not None}
    # by two shards, the second started only when the first is done: between them, every chosen row
    # (a shard that split only what is left would leave one of the four to no one)
    for k in (0, 1):
        log = subprocess.run(cmd + ["--shard", f"{k}/2"], check=True, cwd=REPO, capture_output=True, text=True).stdout
        assert "0 to go" in log and "[train]" not in log and f"shard {k}/2 takes 2" in log
    assert sorted(r["id"] for f in out.glob("fid-*.json") for r in json.loads(f.read_text())) == sorted(fids)
    again = {r["id"]: r["fid"] for r in json.loads((out / "report" / "fashion-mnist-front.json").read_text())}
    assert {i: again[i] for i in redo} == pytest.approx({i: fids[i] for i in redo}, rel=1e-3)


def test_the_published_doc_is_generated_from_the_published_rows():
    """docs/results/fashion-mnist-front.md holds what doc_sections makes of the committed JSON (no JSON
    yet: the not-measured text, with no link to files that do not exist)."""
    section = load_script("scripts/docs_tables.py").section
    table = REPO / "docs" / "results" / "fashion-mnist-front.json"
    rows = json.loads(table.read_text()) if table.is_file() else []
    doc = (REPO / "docs" / "results" / "fashion-mnist-front.md").read_text()
    for name, body in front.doc_sections(rows).items():
        assert section(doc, name) == body, name


def test_every_doc_section_has_a_name_before_any_row_exists():
    rows = [row("dit", 1.0, 30.0, nfe=8), row("elit-mb", 1.0, 24.0, nfe=8, budget=1)]
    assert set(front.doc_sections(rows)) == set(front.doc_sections([])) == set(front.SECTION_NAMES)


def test_a_published_model_is_reused_not_retrained(tmp_path, capsys):
    published = tmp_path / "models" / "dit-d2-s0"
    published.mkdir(parents=True)
    (published / "config.json").write_text('{"format": "x"}')
    (published / "model.safetensors").write_bytes(b"weights")
    out = tmp_path / "study"
    front.reuse_published(out, tmp_path / "models", seeds=(0, 1))
    model = out / "runs" / "dit-d2-s0" / "model"
    assert (model / "model.safetensors").read_bytes() == b"weights" and (model / "config.json").is_file()
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["dit-d2-s0"]     # nothing else made up
    assert "dit-d2-s0: the published model" in capsys.readouterr().out
    (model / "model.safetensors").write_bytes(b"trained here")                 # a run's own result is kept
    front.reuse_published(out, tmp_path / "models", seeds=(0,))
    assert (model / "model.safetensors").read_bytes() == b"trained here"


def test_a_session_keeps_its_rows_and_unfinished_trainings_for_the_next(tmp_path, capsys):
    """save_progress keeps the rows, the newest checkpoint of an unfinished run (with its config and
    log) and publishes a finished model; restore_progress puts them back into a new session's OUT,
    where the rows count as measured and `elit train` finds the checkpoint to resume."""
    out, kept, models = tmp_path / "s1", tmp_path / "progress", tmp_path / "models"
    run = out / "runs" / "elit-mb-s0"
    (run / "checkpoints").mkdir(parents=True)
    for step in (1000, 2000):
        (run / "checkpoints" / f"step-{step:07d}.pt").write_bytes(b"state at %d" % step)
    (run / "config.yaml").write_text("model: {}\n")
    (run / "log.jsonl").write_text('{"step": 2000}\n')
    done = out / "runs" / "dit-d2-s1" / "model"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / "model.safetensors").write_bytes(b"weights")
    measured = row("dit-d2", 0.5, 40.0, nfe=8)
    (out / "rows-0.json").write_text(json.dumps([measured]))
    front.save_progress(out, kept, models)
    assert [p.name for p in (kept / "runs" / "elit-mb-s0" / "checkpoints").iterdir()] == ["step-0002000.pt"]
    assert (models / "dit-d2-s1" / "model.safetensors").read_bytes() == b"weights"
    assert not (kept / "runs" / "dit-d2-s1").exists()
    # the next session: a fresh OUT
    new = tmp_path / "s2"
    front.restore_progress(new, kept)
    assert [r["id"] for r in front.load_rows(new)] == [measured["id"]]
    resumed = new / "runs" / "elit-mb-s0"
    assert (resumed / "checkpoints" / "step-0002000.pt").read_bytes() == b"state at 2000"
    assert (resumed / "log.jsonl").read_text() == '{"step": 2000}\n' and (resumed / "config.yaml").is_file()
    assert "elit-mb-s0: resumes from the kept step-0002000.pt" in capsys.readouterr().out
    # it trained on: the newer checkpoint replaces the kept one; a run's own newer state is never overwritten
    (resumed / "checkpoints" / "step-0003000.pt").write_bytes(b"state at 3000")
    front.restore_progress(new, kept)
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step-0002000.pt", "step-0003000.pt"]
    front.save_progress(new, kept, models)
    assert [p.name for p in (kept / "runs" / "elit-mb-s0" / "checkpoints").iterdir()] == ["step-0003000.pt"]
    # once it finished, its checkpoint is no longer kept: the published model is the result
    (resumed / "model").mkdir()
    (resumed / "model" / "config.json").write_text("{}")
    (resumed / "model" / "model.safetensors").write_bytes(b"final")
    front.save_progress(new, kept, models)
    assert not (kept / "runs" / "elit-mb-s0").exists() and (models / "elit-mb-s0" / "model.safetensors").is_file()


def test_save_progress_needs_a_folder():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "study_front.py"), "--out", "x", "--save-progress",
                             "--progress", ""], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "--save-progress needs --progress DIR" in result.stderr


def test_save_progress_alone_keeps_the_rows_an_earlier_session_kept(tmp_path):
    """--save-progress from a new OUT restores first, so the kept rows are never replaced by fewer."""
    kept = tmp_path / "progress"
    kept.mkdir()
    (kept / "rows.json").write_text(json.dumps([row("dit-d2", 0.5, 40.0, nfe=8)]))
    (tmp_path / "new").mkdir()     # measured here with --progress '' (say): one row of its own
    (tmp_path / "new" / "rows-0.json").write_text(json.dumps([row("dit-d3", 0.7, 30.0, nfe=8)]))
    subprocess.run([sys.executable, str(REPO / "scripts" / "study_front.py"), "--out", str(tmp_path / "new"),
                    "--progress", str(kept), "--models", str(tmp_path / "models"), "--save-progress"],
                   cwd=REPO, check=True, capture_output=True)
    assert sorted(r["model"] for r in json.loads((kept / "rows.json").read_text())) == ["dit-d2", "dit-d3"]
