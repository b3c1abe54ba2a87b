"""`elit plan`: pick steps, budget (or schedule) and guidance that reach the best quality for a cost.

    elit plan --model DIR --target-gflops 3000 --table measured.json
    elit plan --model DIR --target-seconds 0.05            # builds a small proxy table itself

A table is a JSON list of measured rows:
    {"steps": 40, "budget": 4, "schedule": null, "guidance": "ccfg", "scale": 0.25, "weak_budget": 1,
     "sampler": "euler", "gflops_per_image": 1234.5, "seconds_per_image": 0.02,
     "metric": "fid10k", "value": 5.1, "lower_is_better": true}
(`sampler`, `schedule`, `scale`, `weak_budget`, `cache`, `seconds_per_image` optional.) The planner keeps
the rows whose cost fits the target and returns the best one by its metric (ties: the cheaper).

A study table (docs/results/fashion-mnist-front.json: rows of several models and seeds, one column per
metric) is read directly: `--table-model`, `--table-seed` and `--metric` pick the rows and the column.

Without a table it samples the model at a few settings and scores each with a cheap PROXY, not FID:
the RMSE (data space) between its images and a high-step, full-budget Heun reference from the same
seeds (with --scale: the CFG reference at that lambda, and only guided settings are compared).
A low proxy means "close to what the expensive sampler would draw", not "realistic".
"""
from __future__ import annotations

import math
import shlex
import time

import torch

from elit._io import read_json
from elit.errors import UserError

REQUIRED = ("steps", "guidance", "gflops_per_image", "metric", "value", "lower_is_better")
LOWER_IS_BETTER = {"fid": True, "fd_fmnist": True, "fdd": True, "kid": True}   # metric columns of study tables
PROXY_METRIC = "proxy_rmse_to_reference"


# ---------------------------------------------------------------------- tables
def load_table(path, model: str | None = None, seed: int | None = None, metric: str | None = None) -> list[dict]:
    """A planner table; a study table (no `metric` column, one column per metric) is first narrowed
    to one model, seed and metric (front_table)."""
    rows = read_json(path, "table")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "metric" not in rows[0] and "model" in rows[0]:
        return check_table(front_table(rows, model, seed, metric, str(path)), str(path))
    if model is not None or seed is not None or metric is not None:
        raise UserError(f"{path} is a planner table (one metric, one model): --table-model, --table-seed and "
                        "--metric are for study tables such as docs/results/fashion-mnist-front.json")
    return check_table(rows, str(path))


def front_table(rows: list[dict], model: str | None, seed: int | None, metric: str | None,
                where: str = "table") -> list[dict]:
    """The planner rows of one model and seed of a study table, scored by one of its metric columns
    (lower is better: FID, FD-FMNIST). Rows without a value for that metric are left out."""
    models = sorted({r.get("model") for r in rows if isinstance(r, dict)}, key=str)
    seeds = sorted({r.get("seed") for r in rows if isinstance(r, dict)}, key=str)
    metrics = sorted(k for k in LOWER_IS_BETTER if any(isinstance(r, dict) and r.get(k) is not None for r in rows))
    if model is None or seed is None or metric is None:
        raise UserError(f"{where} holds several models, seeds and metrics: choose with --table-model "
                        f"({', '.join(map(str, models))}), --table-seed ({', '.join(map(str, seeds))}) and "
                        f"--metric ({', '.join(metrics)})")
    if metric not in metrics:
        raise UserError(f"{where} has no {metric!r} values; choose --metric from {', '.join(metrics)}")
    chosen = [dict(r, metric=metric, value=r[metric], lower_is_better=LOWER_IS_BETTER[metric])
              for r in rows if r.get("model") == model and r.get("seed") == seed and r.get(metric) is not None]
    if not chosen:
        raise UserError(f"{where} has no {metric} rows for model {model!r} seed {seed}; models: "
                        f"{', '.join(map(str, models))}; seeds: {', '.join(map(str, seeds))}")
    return chosen


def check_table(rows, where: str = "table") -> list[dict]:
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{where} must be a non-empty JSON list of measured rows")
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"{where} row {i} lacks {missing}; each row needs {list(REQUIRED)}")
    metrics = {(r["metric"], bool(r["lower_is_better"])) for r in rows}
    if len(metrics) > 1:
        raise UserError(f"{where} mixes metrics {sorted(metrics)}; rank one metric at a time")
    return rows


def choose(rows: list[dict], target_gflops: float | None = None, target_seconds: float | None = None) -> dict:
    """The best row whose cost (GFLOPs or seconds per image) is at most the target."""
    if (target_gflops is None) == (target_seconds is None):
        raise UserError("give exactly one target: GFLOPs per image or seconds per image")
    key, target, unit = (("gflops_per_image", target_gflops, "GFLOPs") if target_seconds is None
                         else ("seconds_per_image", target_seconds, "seconds"))
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise UserError(f"target must be a positive number, got {target!r}")
    if any(key not in r for r in rows):
        raise UserError(f"some rows lack {key}; plan by GFLOPs or measure seconds for every row")
    cheapest = min(rows, key=lambda r: r[key])
    if target < cheapest[key]:
        raise UserError(f"target {target:g} {unit} per image is below the cheapest measured setting "
                         f"({cheapest[key]:g} {unit}: {describe(cheapest)}); raise the target or measure "
                         f"cheaper settings")
    sign = 1 if rows[0]["lower_is_better"] else -1
    fitting = [r for r in rows if r[key] <= target]
    return min(fitting, key=lambda r: (sign * r["value"], r[key]))


def describe(row: dict) -> str:
    budget = f"schedule {row['schedule']}" if row.get("schedule") else f"budget {row.get('budget') or 'full'}"
    text = f"{row.get('sampler', 'euler')} {row['steps']} steps, {budget}, guidance {row['guidance']}"
    if row["guidance"] != "none":
        text += f" lambda={row.get('scale')}"
        if row.get("weak_budget") is not None:
            text += f" weak budget {row['weak_budget']}"
    if row.get("cache") is not None:
        text += f", TeaCache {row['cache']:g}"
    return text


def command_for(row: dict, model_dir) -> str:
    """The `elit sample` command line that reproduces a row's setting."""
    args = ["elit", "sample", "--model", str(model_dir), "--steps", str(row["steps"])]
    if row.get("sampler", "euler") != "euler":
        args += ["--sampler", row["sampler"]]
    if row.get("schedule"):
        schedule = row["schedule"]
        args += ["--schedule", schedule if isinstance(schedule, str) else ",".join(map(str, schedule))]
    elif row.get("budget") is not None:
        args += ["--budget", str(row["budget"])]
    if row["guidance"] != "none":
        args += ["--guidance", row["guidance"], "--scale", str(row.get("scale"))]
        if row.get("weak_budget") is not None:
            args += ["--weak-budget", str(row["weak_budget"])]
    if row.get("cache") is not None:
        args += ["--cache", str(row["cache"])]
    return shlex.join(args + ["--seeds", "0-49999", "--out", "samples/"])


# ---------------------------------------------------------------------- building a proxy table
def default_settings(model, scale: float | None = None, steps=(10, 20, 40)) -> list[dict]:
    """A small grid: steps x {lowest, middle, full budget, lowest@0.5 then full}; guided if `scale`."""
    budgets = model.budgets
    low, mid, full = budgets[0], budgets[len(budgets) // 2], budgets[-1]
    shapes = [dict(budget=b) for b in sorted({low, mid, full})] + [dict(schedule=f"{low}@0.5,{full}")]
    modes = [dict(guidance="none")] if scale is None else [
        dict(guidance="cfg", scale=scale), dict(guidance="ccfg", scale=scale, weak_budget=low)]
    settings = [dict(steps=s, sampler="euler", **shape, **mode) for s in steps for shape in shapes for mode in modes]
    # ccfg at the lowest budget is cfg (weak = main): keep one of the two.
    return [s for s in settings if not (s["guidance"] == "ccfg" and s.get("budget") == low)]


def timed_sample(model, seeds, setting, batch_size):
    """Sample `seeds` at one setting; returns (images, seconds per image), synchronised on CUDA."""
    from elit.sampling.solvers import sample
    options = {k: v for k, v in setting.items() if v is not None}
    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    images = sample(model, seeds, batch_size=batch_size, **options)
    sync()
    return images, (time.perf_counter() - start) / len(seeds)


def build_table(model, seeds=range(8), settings: list[dict] | None = None, scale: float | None = None,
                reference_steps: int = 50, batch_size: int = 64) -> list[dict]:
    """Sample each setting and score it with the proxy (see module docstring); returns table rows."""
    from elit.sampling.plan import plan_gflops, plan_run
    from elit.sampling.solvers import parse_seeds
    seeds = parse_seeds(seeds)
    settings = settings if settings is not None else default_settings(model, scale)
    guided = {s.get("guidance", "none") != "none" for s in settings}
    if len(guided) > 1:
        raise UserError("a proxy table compares settings against one reference: make them all guided "
                         "(same scale) or all unguided")
    reference_setting = dict(steps=reference_steps, sampler="heun")
    if guided == {True}:
        scales = {s["scale"] for s in settings}
        if len(scales) > 1:
            raise UserError(f"guided settings must share one scale for a proxy table, got {sorted(scales)}")
        reference_setting.update(guidance="cfg", scale=scales.pop())
    reference, _ = timed_sample(model, seeds, reference_setting, batch_size)
    label = f"heun {reference_steps} steps, full budget" + (
        f", cfg lambda={reference_setting['scale']}" if "scale" in reference_setting else "")
    rows = []
    for setting in settings:
        plan = plan_run(model, **{k: v for k, v in setting.items() if v is not None})
        images, seconds = timed_sample(model, seeds, setting, batch_size)
        rmse = (images - reference).pow(2).mean().sqrt().item()
        rows.append(dict({"budget": None, "schedule": None, "scale": None, "weak_budget": None}, **setting,
                         gflops_per_image=plan_gflops(model.config, plan), seconds_per_image=seconds,
                         metric=PROXY_METRIC, value=rmse, lower_is_better=True,
                         note=f"PROXY, not FID: RMSE to the {label} reference from the same {len(reference)} seeds"))
    return rows
