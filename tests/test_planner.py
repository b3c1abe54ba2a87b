"""Budget planner: best row under a cost, refusals, the reproducing command, the proxy table."""
import json

import pytest

import elit
from elit.cli import main
from elit.sampling.planner import PROXY_METRIC, build_table, choose, command_for
from elit.sampling import sampling_gflops
from test_sampling import one_thread, tiny_model  # noqa: F401  (fixture re-used)


def row(steps, budget, guidance, gflops, value, seconds=None, **extra):
    r = dict(steps=steps, budget=budget, schedule=None, guidance=guidance, scale=0.25 if guidance != "none" else None,
             weak_budget=1 if guidance == "ccfg" else None, gflops_per_image=gflops, metric="fid10k", value=value,
             lower_is_better=True, **extra)
    if seconds is not None:
        r["seconds_per_image"] = seconds
    return r


TABLE = [row(20, 1, "none", 100.0, 30.0, 0.1), row(40, 4, "none", 400.0, 12.0, 0.4),
         row(40, 4, "cfg", 800.0, 6.0, 0.8), row(40, 4, "ccfg", 530.0, 5.5, 0.55), row(40, 2, "ccfg", 300.0, 9.0, 0.3)]


def test_choose_best_under_target():
    assert choose(TABLE, target_gflops=1000)["guidance"] == "ccfg"
    assert choose(TABLE, target_gflops=1000)["budget"] == 4
    assert choose(TABLE, target_gflops=450)["value"] == 9.0
    assert choose(TABLE, target_gflops=100)["value"] == 30.0
    assert choose(TABLE, target_seconds=0.45)["value"] == 9.0
    higher = [dict(r, lower_is_better=False, metric="is") for r in TABLE]
    assert choose(higher, target_gflops=1000)["value"] == 30.0


def test_refuses_target_below_cheapest():
    with pytest.raises(ValueError, match="below the cheapest"):
        choose(TABLE, target_gflops=99)


def test_command_reproduces_the_setting():
    cmd = command_for(TABLE[3], "runs/m")
    assert "--guidance ccfg --scale 0.25 --weak-budget 1" in cmd and "--budget 4" in cmd and "--steps 40" in cmd
    assert "--schedule 1@0.5,4" in command_for(dict(TABLE[0], budget=None, schedule="1@0.5,4"), "m")


def test_proxy_table_is_labelled_and_costed():
    model = tiny_model()
    settings = [dict(steps=2, budget=1), dict(steps=2, budget=4), dict(steps=4, schedule="1@0.5,4")]
    rows = build_table(model, [0, 1], settings, reference_steps=4)
    assert [r["metric"] for r in rows] == [PROXY_METRIC] * 3
    assert all("not FID" in r["note"] and r["value"] > 0 for r in rows)
    assert rows[2]["gflops_per_image"] == pytest.approx(sampling_gflops(model.config, 4, schedule="1@0.5,4"))
    assert rows[0]["gflops_per_image"] < rows[1]["gflops_per_image"]


def test_plan_cli_with_table_and_refusal(tmp_path, capsys):
    model_dir = tmp_path / "m"
    elit.save_pretrained(tiny_model(), model_dir)
    table = tmp_path / "t.json"
    table.write_text(json.dumps(TABLE))
    assert main(["plan", "--model", str(model_dir), "--target-gflops", "600", "--table", str(table)]) == 0
    out = capsys.readouterr().out
    assert "ccfg" in out and "elit sample --model" in out
    assert main(["plan", "--model", str(model_dir), "--target-gflops", "50", "--table", str(table)]) == 2
    assert "below the cheapest" in capsys.readouterr().err
    table.write_text(json.dumps([{"steps": 4}]))
    assert main(["plan", "--model", str(model_dir), "--target-gflops", "50", "--table", str(table)]) == 2
    assert main(["plan", "--model", str(tmp_path), "--target-gflops", "50"]) == 2
