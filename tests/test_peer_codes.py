"""benchmarks/peer_codes.py: our side's plumbing only (arguments, checkout checks, skipped parts,
the ratio table). The reference codes themselves are not run here: a fake checkout would test
nothing of theirs, and the real ones are not part of this repository."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO as ROOT, load_script
SCRIPT = ROOT / "benchmarks" / "peer_codes.py"


@pytest.fixture(scope="module")
def pc():
    return load_script("benchmarks/peer_codes.py", "peer_codes_under_test")


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(folder.rglob("*"))


def test_missing_checkout_is_a_clear_error_and_writes_nothing(tmp_path):
    missing = tmp_path / "no-such-elit"
    before = _files(tmp_path)
    r = subprocess.run([sys.executable, str(SCRIPT), "--elit-checkout", str(missing)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--elit-checkout" in r.stderr and str(missing) in r.stderr
    assert "git clone https://github.com/snap-research/elit" in r.stderr
    assert r.stdout == ""
    assert _files(tmp_path) == before


def test_wrong_checkout_names_the_expected_file(pc, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sit.py").write_text("")
    args = pc.parse_args(["--elit-checkout", str(tmp_path), "--only", "forward"])
    with pytest.raises(pc.CheckoutError) as e:
        pc.plan_parts(args)
    msg = str(e.value)
    assert str(tmp_path / "models" / "sit_elit.py") in msg and "snap-research/elit" in msg
    dit = tmp_path / "dit"
    dit.mkdir()
    args = pc.parse_args(["--dit-checkout", str(dit), "--only", "train"])
    with pytest.raises(pc.CheckoutError, match=r"models\.py not found.*git clone https://github.com/facebookresearch/DiT"):
        pc.plan_parts(args)


def test_parts_without_their_checkout_are_skipped(pc):
    run, skipped, roots = pc.plan_parts(pc.parse_args([]))
    assert run == [] and roots == {}
    assert skipped == ["forward (needs --elit-checkout)", "train (needs --dit-checkout)",
                       "sample (needs --elit-checkout)", "objective (needs --elit-checkout)"]
    # a checkout for a part that is not asked for is not even checked
    run, skipped, _ = pc.plan_parts(pc.parse_args(["--dit-checkout", "/nonexistent", "--only", "sample"]))
    assert run == [] and skipped == ["sample (needs --elit-checkout)"]


def test_no_checkout_prints_the_header_and_what_was_skipped(tmp_path):
    # a subprocess: main() sets the thread count and OMP_NUM_THREADS of its process
    r = subprocess.run([sys.executable, str(SCRIPT), "--threads", "1"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "1 torch threads" in out and "load average" in out
    assert "skipped: forward (needs --elit-checkout), train (needs --dit-checkout), sample (needs --elit-checkout)" in out
    assert "nothing to run" in out


def test_arguments(pc):
    a = pc.parse_args(["--model", "b", "--batch", "2", "--repeats", "3", "--threads", "1", "--only", "sample,forward"])
    assert (a.model, a.batch, a.repeats, a.threads) == ("B", 2, 3, 1)
    assert a.only == ["forward", "sample"]       # canonical order
    for bad in (["--only", "forward,speed"], ["--only", ","], ["--batch", "0"], ["--model", "XL"]):
        with pytest.raises(SystemExit):
            pc.parse_args(bad)


def test_ratio_table_is_reference_over_ours(pc):
    text = pc.ratio_table([dict(case="1/16 latents", ref_s=0.3, ours_s=0.2, max_diff=2.5e-6),
                           dict(case="16/16 latents", ref_s=0.2, ours_s=0.25, max_diff=0.0)], "[forward] title")
    lines = text.splitlines()
    assert lines[0] == "[forward] title"
    assert "ratio" in lines[1] and "max |diff|" in lines[1]
    assert "1.50x" in lines[3] and "2.50e-06" in lines[3]
    assert "0.80x" in lines[4]


def test_json_entry_renders_in_the_docs_tables(pc):
    """What `--json PATH --key NAME` stores is what scripts/docs_tables.py renders the tables from."""
    dt = load_script("scripts/docs_tables.py")
    args = pc.parse_args(["--batch", "4", "--threads", "2"])

    def row(ref, ours, **kw):
        return dict(case="c", ref_s=ref, ours_s=ours, ref_min=ref * 0.9, ours_min=ours, max_diff=2.5e-6, **kw)
    figures = {"forward": [row(0.22, 0.20, latents=1), row(0.30, 0.30, latents=16)], "train": [row(0.8, 0.4)],
               "sample": [row(20.0, 19.0)]}
    eager = pc.doc_entry(args, figures, 16, "8/2/2", {"command": "x"})
    assert json.loads(json.dumps(eager)) == eager
    compiled = pc.doc_entry(pc.parse_args(["--compile", "--only", "forward,train"]),
                            {k: figures[k] for k in ("forward", "train")}, 16, "8/2/2", {"command": "x"})
    data = {"final-eager": eager, "final-compiled": compiled, "main-1-thread": eager, "layout-2-8-2": eager}
    assert dt.peer_table("main-1-thread", data).splitlines()[2:] == [
        "| forward, ELIT-SiT-S/2 (8/2/2) | 1/16 latents | 0.2200 | 0.2000 | 1.10x | 0.99x | 2.50e-06 |",
        "| | 16/16 | 0.3000 | 0.3000 | 1.00x | 0.90x | 2.50e-06 |",
        "| train, DiT-S/2 | one step | 0.8000 | 0.4000 | 2.00x | 1.80x | 2.50e-06 |",
        "| sample, Euler 40, CCFG 16 + 1 latents | batch of 4 | 20.0000 | 19.0000 | 1.05x | 0.95x | 2.50e-06 |"]
    final = dt.peers_final(data).splitlines()
    assert final[2].endswith("| 0.2000 | 1.10x | 0.99x |") and final[-1].endswith("| not run | | |")
    assert dt.peers_summary(data).splitlines()[2:] == ["| both eager | 1.10x | 1.00x | 2.00x | 1.05x |",
                                                      "| ours with `--compile` | 1.10x | 1.00x | 2.00x | not run |"]
    assert dt.peers_by_budget(data).splitlines()[0] == "| latents / group | 1 | 16 |"


def test_objective_table_passes_only_within_the_tolerance(pc):
    rows = [dict(case="loss at 1/16 latents", theirs=4.0, ours=4.0, max_diff=4e-7, relative=1e-7)]
    assert pc.objective_table(rows, "t").splitlines()[-1].startswith("objective parity: PASS")
    rows.append(dict(case="loss at 16/16 latents", theirs=4.0, ours=4.001, max_diff=1e-3, relative=2.5e-4))
    assert pc.objective_table(rows, "t").splitlines()[-1].startswith("objective parity: FAIL (largest relative "
                                                                       "difference 2.5e-04")


def test_precision_choices_set_both_sides(pc, monkeypatch):
    """--precision bf16 runs both in bf16; default runs each at its own default: theirs fp32, ours what
    --precision auto takes for this model (here pretended: native bf16 and a pass 2x as fast)."""
    import torch
    import elit
    from elit import _precision as P
    ours = elit.create_model("ELIT-DiT-S/2", input_size=8).eval()
    args = pc.parse_args(["--precision", "bf16"])
    assert pc.choose_precisions(args, ours, "forward") == ("bf16", "bf16") and ours.compute_precision == "bf16"
    args = pc.parse_args(["--precision", "default"])
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx2"}))
    assert pc.choose_precisions(args, ours, "forward") == ("fp32", "fp32") and ours.compute_precision == "fp32"
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(P, "probe_speedup", lambda model, batch: 2.0)
    assert pc.choose_precisions(args, ours, "sample") == ("bf16", "fp32")
    assert pc.choose_precisions(args, ours, "train") == ("fp32", "fp32")     # auto trains in bf16 on GPUs only
    assert args.chosen == {"forward": {"ours": "fp32", "theirs": "fp32"}, "sample": {"ours": "bf16", "theirs": "fp32"},
                           "train": {"ours": "fp32", "theirs": "fp32"}}
    assert pc.doc_entry(args, {}, 16, "8/2/2", {})["chosen"] == args.chosen
    seen = []
    pc.under("bf16", lambda: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))()
    pc.under("fp32", lambda: seen.append((torch.is_autocast_enabled("cpu"),)))()
    assert seen == [(True, torch.bfloat16), (False,)]


def test_precision_table_pairs_the_default_and_bf16_runs(pc):
    dt = load_script("scripts/docs_tables.py")

    def entry(precision, ours, scale):
        args = pc.parse_args(["--precision", precision])
        args.chosen = {"forward": {"ours": ours, "theirs": "fp32" if precision == "default" else "bf16"}}
        rows = [dict(case="c", latents=k, ref_s=0.2 * scale, ours_s=0.1 * scale, ref_min=0.2, ours_min=0.1,
                     max_diff=1e-6) for k in (1, 16)]
        return pc.doc_entry(args, {"forward": rows}, 16, "8/2/2", {})
    data = {f"precision-{size}-{p}": entry(p, "fp32", 1 if p == "default" else 5)
            for size in ("S", "B") for p in ("default", "bf16")}
    lines = dt.peers_precision(data).splitlines()
    assert len(lines) == 2 + 4
    assert lines[2] == ("| forward, ELIT-SiT-S/2 (8/2/2) | 1/16 latents | fp32 / fp32 | 0.2000 | 0.1000 | 2.00x (2.00x) "
                        "| 1.0000 | 0.5000 | 2.00x (2.00x) |")
    del data["precision-B-bf16"]["parts"]["forward"][1]
    assert dt.peers_precision(data).splitlines()[-1].endswith("| not run | | |")
