"""The Fashion-MNIST study driver (issues 7 and 14) end to end at smoke scale with two training and two sweep
processes (slow: about a minute on 2 cores; run with -m slow)."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO, load_script


def _study():
    return load_script("scripts/study_fmnist.py")


@pytest.mark.slow
def test_study_smoke_runs_end_to_end_and_resumes(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "study_fmnist.py"), "--out", str(tmp_path), "--smoke",
           "--device", "cpu", "--jobs", "2"]
    subprocess.run(cmd, check=True, cwd=REPO)
    rows = json.loads((tmp_path / "report" / "fashion-mnist.json").read_text())
    models = {r["model"] for r in rows}
    assert models == {"dit", "elit", "elit-mb", "uvit", "elit-uvit-mb", "hdit", "elit-hdit-mb"}
    mb = [r for r in rows if r["model"] == "elit-mb"]
    assert {r["latents_per_group"] for r in mb} == {1, 2, 4, 8, 16}
    assert {r["guidance"] for r in mb} == {"none", "cfg", "ccfg", "ag"}
    assert all(r["num_samples"] == 16 and r["gflops_per_image"] > 0 for r in rows)
    for name in ("samples-dit.png", "samples-elit-mb.png", "fd_fmnist-vs-gflops.png", "tables.md"):
        assert (tmp_path / "report" / name).is_file()
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "elit-mb, fd_fmnist:" in tables and "| J~ | none | CFG" in tables   # the per-budget grids
    # a rerun finds everything done: no training, no new rows
    out = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "[train] dit: done" in out and f"[sweep] {len(rows)} rows measured, 0 to go" in out
    assert len(rows) == len(json.loads((tmp_path / "plan-0.json").read_text())) + \
        len(json.loads((tmp_path / "plan-1.json").read_text()))
    # --publish: the report into a docs folder, the doc's generated sections filled, its prose kept
    dest = tmp_path / "docs"
    (dest / "fashion-mnist").mkdir(parents=True)
    (dest / "fashion-mnist.md").write_text("intro\n<!-- results-table:start -->\n<!-- results-table:end -->\n\n"
                                           "<!-- budget-grids:start -->\n<!-- budget-grids:end -->\nend\n")
    subprocess.run(cmd + ["--report-only", "--publish", str(dest)], check=True, cwd=REPO)
    assert json.loads((dest / "fashion-mnist.json").read_text()) == rows
    assert len(json.loads((dest / "fashion-mnist" / "rows-0.json").read_text())) == len(rows)
    assert (dest / "fashion-mnist" / "samples-elit-mb.png").is_file()
    doc = (dest / "fashion-mnist.md").read_text()
    assert doc.startswith("intro\n") and doc.endswith("end\n") and doc.count("| ELIT-MB |") == len(mb)
    assert "**ELIT-MB, FD-FMNIST**" in doc


def test_plan_has_every_row_the_issue_asks_for_once():
    """Issue 7: ELIT-MB at J~ in {1, 2, 4, 8, 16} unguided and with CFG, cheap CFG and autoguidance at
    both scales; DiT and single-budget ELIT for comparison. Rows that would repeat another are left
    out: autoguidance needs a weaker pass than the main one, and cheap CFG whose weak pass is the
    main budget is CFG."""
    study = _study()
    budgets = list(range(1, 17))
    plan = study.sweep_plan({"dit": SimpleNamespace(budgets=[]), "elit": SimpleNamespace(budgets=budgets),
                             "elit-mb": SimpleNamespace(budgets=budgets), "uvit": SimpleNamespace(budgets=[]),
                             "elit-uvit-mb": SimpleNamespace(budgets=budgets), "hdit": SimpleNamespace(budgets=[]),
                             "elit-hdit-mb": SimpleNamespace(budgets=budgets)})
    keys = [(label, s["latents_per_group"], s["guidance"], s["scale"], s["weak_budget"]) for label, s in plan]
    assert len(keys) == len(set(keys))
    mb = {k[1:] for k in keys if k[0] == "elit-mb"}
    want = {(b, "none", 0.0, None) for b in study.BUDGETS}
    want |= {(b, g, s, 1 if g != "cfg" else None) for b in study.BUDGETS for g in ("cfg", "ccfg", "ag")
             for s in study.SCALES if g == "cfg" or b > 1}
    assert mb == want
    assert {k[1:] for k in keys if k[0] == "dit"} == {(None, "none", 0.0, None)} | \
        {(None, "cfg", s, None) for s in study.SCALES}
    assert {k[1:] for k in keys if k[0] == "elit"} == {(b, "none", 0.0, None) for b in study.BUDGETS} | \
        {(16, "cfg", s, None) for s in study.SCALES}
    # issue 14: U-ViT and ELIT-U-ViT-MB unguided, at J~ = 16, 4, 2, 1
    assert {k[1:] for k in keys if k[0] == "uvit"} == {(None, "none", 0.0, None)}
    assert {k[1:] for k in keys if k[0] == "elit-uvit-mb"} == {(b, "none", 0.0, None) for b in (16, 4, 2, 1)}
    # issue 16: HDiT and ELIT-HDiT-MB unguided, at J~ = 16, 4, 1
    assert {k[1:] for k in keys if k[0] == "hdit"} == {(None, "none", 0.0, None)}
    assert {k[1:] for k in keys if k[0] == "elit-hdit-mb"} == {(b, "none", 0.0, None) for b in (16, 4, 1)}
    # most informative first: the three models unguided at full budget, then the budget curve
    assert keys[:5] == [("dit", None, "none", 0.0, None), ("elit", 16, "none", 0.0, None),
                        ("elit-mb", 16, "none", 0.0, None), ("elit-mb", 1, "none", 0.0, None),
                        ("elit-mb", 4, "none", 0.0, None)]


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


def test_results_doc_tables_are_the_published_rows():
    """The results table and budget grids of fashion-mnist.md are what `--publish` generates from
    fashion-mnist.json: a number edited by hand, or a row published without its table, fails here."""
    study = _study()
    res = REPO / "docs" / "results"
    text = (res / "fashion-mnist.md").read_text()
    rows = json.loads((res / "fashion-mnist.json").read_text())
    assert study.fill_doc(text, study.doc_sections(rows, study.METRICS)) == text
    table = text.split("<!-- results-table:start -->")[1].split("<!-- results-table:end -->")[0]
    assert table.count("\n| ") == len(rows) + 1         # the header, then a line per row
    with pytest.raises(SystemExit, match="budget-grids:start"):
        study.fill_doc(text.replace("<!-- budget-grids:start -->", ""), study.doc_sections(rows, study.METRICS))
