"""`elit eval`: budget sweeps end to end on tiny random models, with the Fashion-MNIST feature metric."""
import json

import pytest
import torch

import elit
from elit.cli import main
from elit.eval.sweep import sweep_settings
from elit.eval.metrics.compute import compute_reference
from elit.sampling import sampling_gflops


def tiny(tmp_path, name, elit_on=True):
    # 32x32 one-channel images as Fashion-MNIST models make; patch 4 -> 8x8 tokens, 4 windows, J = 4
    kw = dict(input_size=32, in_channels=1, num_classes=10, patch_size=4, hidden_size=32, depth=3, num_heads=4)
    model = elit.create_model("ELIT-DiT-S/4" if elit_on else "DiT-S/4",
                              **(dict(kw, head_depth=1, tail_depth=1) if elit_on else kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return elit.save_pretrained(model, tmp_path / name), model


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("ref") / "fmnist-ref.npz"
    compute_reference("fmnist-test", net="fmnist", out=str(path), num=200, progress=False)
    return path


def test_sweep_settings_leave_out_impossible_rows():
    rows = sweep_settings([1, 4], ["none", "cfg", "ccfg", "ag"], [0.5, 2.0], None, 1)
    assert {(r["latents_per_group"], r["guidance"]) for r in rows} == {
        (1, "none"), (1, "cfg"), (1, "ccfg"), (4, "none"), (4, "cfg"), (4, "ccfg"), (4, "ag")}
    assert len(rows) == 2 + 3 * 2 * 2 - 2          # ag at budget 1 has no weaker pass
    assert all(r["weak_budget"] == 1 for r in rows if r["guidance"] in ("ccfg", "ag"))
    plain = sweep_settings([None], ["none", "cfg", "ccfg", "ag"], [1.0], None, None)
    assert [r["guidance"] for r in plain] == ["none", "cfg"]


def test_eval_cli_sweeps_resumes_and_plots(tmp_path, ref, capsys):
    elit_dir, elit_model = tiny(tmp_path, "elit")
    dit_dir, _ = tiny(tmp_path, "dit", elit_on=False)
    out, plot = tmp_path / "rows.json", tmp_path / "plot.png"
    args = ["eval", "--model", f"e={elit_dir}", "--model", f"d={dit_dir}", "--budgets", "1,4",
            "--guidance", "none,ccfg", "--scales", "1.5", "--num", "24", "--steps", "2", "--batch-size", "12",
            "--ref", str(ref), "--metrics", "fd_fmnist", "--json", str(out), "--plot", str(plot), "--no-progress"]
    assert main(args) == 0
    rows = json.loads(out.read_text())
    got = sorted((r["model"], r["latents_per_group"] or 0, r["guidance"]) for r in rows)
    assert got == [("d", 0, "none"), ("e", 1, "ccfg"), ("e", 1, "none"), ("e", 4, "ccfg"), ("e", 4, "none")]
    for r in rows:
        assert r["fd_fmnist"] > 0 and r["num_samples"] == 24
        if r["model"] == "e":
            assert r["gflops_per_image"] == pytest.approx(sampling_gflops(
                elit_model.config, steps=2, budget=r["latents_per_group"], guidance=r["guidance"],
                weak_budget=r["weak_budget"], scale=r["scale"] if r["guidance"] != "none" else None), rel=1e-3)
    by = {(r["latents_per_group"], r["guidance"]): r for r in rows if r["model"] == "e"}
    assert by[(1, "none")]["gflops_per_image"] < by[(4, "none")]["gflops_per_image"] < by[(4, "ccfg")]["gflops_per_image"]
    assert plot.is_file() and plot.stat().st_size > 1000
    # budgets change the samples, so they change the metric
    assert by[(1, "none")]["fd_fmnist"] != by[(4, "none")]["fd_fmnist"]
    # rerunning the same command resumes: nothing is recomputed, the rows stay as they were
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming: 5 rows" in capsys.readouterr().out
    assert json.loads(out.read_text()) == rows


def test_eval_cli_bad_input(tmp_path, ref, capsys):
    elit_dir, _ = tiny(tmp_path, "elit")
    base = ["eval", "--model", str(elit_dir), "--ref", str(ref), "--metrics", "fd_fmnist", "--no-progress"]
    assert main(base + ["--num", "1"]) == 2
    assert "--num: must be >= 2 (a covariance needs two samples" in capsys.readouterr().err
    assert main(base + ["--guidance", "best"]) == 2
    assert "unknown guidance" in capsys.readouterr().err
    assert main(base + ["--budgets", "9"]) == 2
    assert "not valid" in capsys.readouterr().err
    assert main(base + ["--metrics", "fid2"]) == 2
    assert "unknown metrics" in capsys.readouterr().err


def test_run_sweep_takes_ordered_pairs_and_skips_measured_ones(tmp_path, ref):
    from elit.eval.sweep import run_sweep
    _, model = tiny(tmp_path, "elit")
    none = lambda b: dict(latents_per_group=b, guidance="none", scale=0.0, weak_budget=None)  # noqa: E731
    kw = dict(num=8, steps=2, sampler="euler", metrics=("fd_fmnist",), ref=str(ref), batch_size=8,
              json_path=tmp_path / "rows.json", progress=False)
    rows = run_sweep({"e": model}, [("e", none(4)), ("e", none(1))], **kw)
    assert [r["latents_per_group"] for r in rows] == [4, 1]          # the given order, not sorted
    rows = run_sweep({"e": model}, [("e", none(2)), ("e", none(4))], **kw)
    assert [r["latents_per_group"] for r in rows] == [4, 1, 2]       # budget 4 was measured already


def test_a_resume_never_passes_other_measurements_off_as_its_own_nor_drops_them(tmp_path, ref, capsys):
    """Issue 30 (found by the sweep): rows of another --num, another reference or other weights under the
    same name were skipped as done and reported as this sweep's; rows lacking a newly asked metric were
    dropped from the file when it was rewritten (an FID measured for hours, gone)."""
    a_dir, _ = tiny(tmp_path, "a")
    out = tmp_path / "rows.json"
    base = ["eval", "--budgets", "1", "--steps", "1", "--batch-size", "8", "--ref", str(ref), "--metrics",
            "fd_fmnist", "--json", str(out), "--no-progress"]
    assert main(base + ["--model", f"m={a_dir}", "--num", "8"]) == 0
    row = json.loads(out.read_text())[0]
    assert (row["num"], row["seed_start"], row["ref"]) == (8, 0, str(ref)) and len(row["model_sha256"]) == 64
    assert row["precision"] == ("bf16" if "precision bf16 autocast" in capsys.readouterr().out else "fp32")   # auto, said
    for extra, said in ((["--model", f"m={a_dir}", "--num", "16"], "num: 8 -> 16"),
                        (["--model", f"m={a_dir}", "--num", "8", "--seed-start", "5"], "seed_start: 0 -> 5"),
                        (["--model", f"m={a_dir}", "--num", "8", "--precision", "bf16"], "precision fp32 -> bf16")):
        assert main(base + extra) == 2 and said in capsys.readouterr().err
    other = tmp_path / "b"
    model = elit.load_pretrained(a_dir)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    elit.save_pretrained(model, other)
    assert main(base + ["--model", f"m={other}", "--num", "8"]) == 2
    assert "other weights under the same name" in capsys.readouterr().err
    assert main(base + ["--model", str(a_dir), "--model", f"{other}/../a", "--num", "8"]) == 2
    assert "two models are named 'a'" in capsys.readouterr().err
    saved = json.loads(out.read_text())
    saved[0]["fid"], saved[0]["fd_fmnist"] = 12.5, None     # as if measured for FID only, before
    out.write_text(json.dumps(saved))
    assert main(base + ["--model", f"m={a_dir}", "--num", "8"]) == 0
    again = json.loads(out.read_text())
    assert len(again) == 1 and again[0]["fid"] == 12.5 and again[0]["fd_fmnist"] == pytest.approx(row["fd_fmnist"])


def test_budget_guidance_table_puts_each_row_in_its_cell():
    from elit.eval.report import budget_guidance_table
    row = lambda m, b, g, s, fid: dict(model=m, latents_per_group=b, guidance=g, scale=s, fid=fid)  # noqa: E731
    rows = [row("mb", 2, "none", 0.0, 12.0), row("mb", 4, "ccfg", 2.0, 9.5), row("mb", 4, "none", 0.0, 11.0),
            row("mb", 4, "cfg", 0.5, 10.25), row("dit", None, "none", 0.0, 1.0)]
    lines = budget_guidance_table(rows, "mb", "fid").splitlines()
    assert lines[0] == "| J~ | none | CFG 0.5 | cheap CFG 2 |"
    assert lines[2:] == ["| 4 | 11.00 | 10.25 | 9.50 |", "| 2 | 12.00 | - | - |"]
    assert budget_guidance_table(rows, "dit", "fid").splitlines()[2] == "| - | 1.00 |"
    with pytest.raises(ValueError, match="fd_fmnist"):
        budget_guidance_table(rows, "mb", "fd_fmnist")


def test_eval_and_fid_agree_on_an_adm_style_reference(tmp_path, capsys):
    """An ADM reference batch holds images (arr_0) and its own mu/sigma (of another protocol): both
    commands measure its images, so `elit eval` and `elit fid` give one number for the same inputs."""
    import numpy as np
    from elit.eval.metrics.images import fmnist_images
    model_dir, _ = tiny(tmp_path, "m")
    images = fmnist_images("test", 200).permute(0, 2, 3, 1).numpy()          # NHWC uint8, as ADM stores them
    adm = tmp_path / "VIRTUAL_fmnist.npz"
    np.savez(adm, arr_0=images, mu=np.full(128, 7.0), sigma=np.eye(128) * 3)  # stats that are not ours
    rows = tmp_path / "rows.json"
    common = ["--metrics", "fd_fmnist"]
    assert main(["eval", "--model", str(model_dir), "--budgets", "2", "--num", "24", "--steps", "2",
                 "--batch-size", "12", "--ref", str(adm), "--json", str(rows), "--no-progress", *common]) == 0
    from_eval = json.loads(rows.read_text())[0]["fd_fmnist"]
    samples = tmp_path / "samples"
    assert main(["sample", "--model", str(model_dir), "--budget", "2", "--seeds", "0-23", "--steps", "2",
                 "--batch-size", "12", "--out", str(samples)]) == 0
    capsys.readouterr()
    assert main(["fid", str(samples), str(adm), "--metric-net", "fmnist", "--json", "--quiet"]) == 0
    from_fid = json.loads(capsys.readouterr().out)["value"]
    assert from_fid == pytest.approx(from_eval, rel=1e-6)
