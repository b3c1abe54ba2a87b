"""Does ELIT converge faster? (issue 20; the paper's Fig. 4: ELIT reaches DiT's quality 3.3x sooner
at 256px.) DiT and multi-budget ELIT (the Fashion-MNIST study configs) are trained to 8,000 steps with
two training seeds each, keeping a checkpoint every 1,000 steps, and the EMA weights at 1k, 2k, 4k
and 8k are measured unguided: FID and FD-FMNIST, N = 2,000, 40 Euler steps, at full budget (and at
J~ = 4 for ELIT-MB).

    python scripts/study_convergence.py --out runs/convergence --jobs 2     # train, then measure
    python scripts/study_convergence.py --out runs/convergence --measure-only   # rows of the checkpoints so far
    for k in 0 1; do python scripts/study_convergence.py --out runs/convergence --measure-only --shard $k/2 --compile & done
    python scripts/study_convergence.py --out runs/convergence --report-only --publish docs/results
    python scripts/study_convergence.py --out /tmp/c --smoke                # a minute: tiny settings, same code

The scale point (issue 26): `--width 128` trains DiT and ELIT-MB at that width (same depth, heads and
recipe), seed 0, to 4,000 steps, and measures the last step alone, in the same protocol, beside the
width-64 rows of that step; `--report-only --publish docs/results` writes fashion-mnist-scale.json and
the convergence doc's scale section. Each training takes hours on one core, so the point carries its
progress between sessions (--save-progress before a session ends; every later run restores it first):

    python scripts/study_convergence.py --out runs/scale --width 128 --jobs 2
    python scripts/study_convergence.py --out runs/scale --width 128 --save-progress

A width-128 checkpoint is about 30 MiB (weights, EMA and Adam's two moments): where the machine's disk
outlives the session, keep OUT itself (it resumes as it is) or give `--progress DIR` outside the
repository rather than committing the default folder.

Every part resumes: `elit train` continues from its last checkpoint, and a row already in
OUT/rows-*.json is not measured again. `--measure-only --shard K/N` measures every N-th row of the
plan, from the K-th, into OUT/rows-K.json: run N of them side by side (one thread each by default).
`--only 'dit-s1@*'` measures just the matching checkpoints into a file of their own: one core can
start on a finished run while the other still trains. Rows are measured for whatever checkpoints
exist, so a session that cannot finish the training can still measure the checkpoints it has; the
latest checkpoints and the full budget go first. Runs live in OUT/runs/<model>-s<seed>/ (the
`elit train` folders).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import study_progress  # noqa: E402  (what a study carries between sessions)

MODELS = {"dit": "study-fmnist-dit", "elit-mb": "study-fmnist-elit-mb"}   # label -> training config
SEEDS = (0, 1)
CHECKPOINTS = (1000, 2000, 4000, 8000)
BUDGETS = {"dit": (None,), "elit-mb": (None, 4)}      # None: full budget
METRICS = ("fid", "fd_fmnist")
ROOT = pathlib.Path(__file__).resolve().parents[1]
SCALE_STEPS = 4000                  # the scale point: trained this far, measured here only
SCALE_PROGRESS = "docs/results/fashion-mnist-convergence/scale-progress"   # kept between sessions
SCALE_MODELS = "docs/results/fashion-mnist-convergence/models"             # finished, published


def study_models(width: int | None) -> dict:
    """label -> training config: the two study models, or (the scale point) the same at `width`."""
    return {f"{label}-w{width}": config for label, config in MODELS.items()} if width else dict(MODELS)


def family(label: str) -> str:
    """'elit-mb-w128-s0@4000' -> 'elit-mb': the model a run or checkpoint label is an instance of."""
    return re.sub(r"-w\d+$", "", label.split("@")[0].rsplit("-s", 1)[0])


def run_name(label: str, seed: int) -> str:
    return f"{label}-s{seed}"


def train(out: pathlib.Path, args, overrides: list[str], models: dict, ckpt_every: int) -> None:
    """Train (or resume) every (model, seed) to the last checkpoint with the real CLI, `jobs` at a time."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    pending = []
    for label, config in models.items():
        for seed in args.seeds:
            run = out / "runs" / run_name(label, seed)
            if (run / "model" / "model.safetensors").is_file():
                print(f"[train] {run.name}: done", flush=True)
                continue
            pending.append((run.name, [
                sys.executable, "-m", "elit", "train", "--config", config, "--out", str(run),
                f"train.max_steps={args.checkpoints[-1]}", f"train.seed={seed}",
                f"log.ckpt_every={ckpt_every}", f"log.keep_last={args.checkpoints[-1] // ckpt_every}",
                f"system.device={args.device}", f"system.threads={threads}", "log.progress=false", *overrides]))
    running = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name, cmd = pending.pop(0)
            print("[train] " + " ".join(cmd[2:]), flush=True)
            running[name] = subprocess.Popen(cmd)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode:
                for other in running.values():
                    other.terminate()
                raise SystemExit(f"[train] {name} failed (exit {proc.returncode}); rerun to resume it")


def checkpoint_models(out: pathlib.Path, args, labels) -> dict:
    """label '<model>-s<seed>@<step>' -> the EMA model of that checkpoint, for every one that exists
    (the last step's is the run's EMA model when its checkpoints are gone: published, carried over)."""
    import torch

    from elit.hub import load_pretrained
    from elit.model import ELITModel
    from elit.train.checkpoint import checkpoint_path
    from elit.train.config import load_config
    models = {}
    for label in labels:
        for seed in args.seeds:
            run = out / "runs" / run_name(label, seed)
            for step in args.checkpoints:
                path = checkpoint_path(run, step)
                if not path.is_file():
                    if step == args.checkpoints[-1] and study_progress.is_trained(run):
                        models[f"{run.name}@{step}"] = load_pretrained(run / "model", device=args.device).eval()
                    continue
                model = ELITModel(load_config(str(run / "config.yaml")).model)
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["ema"])
                models[f"{run.name}@{step}"] = model.to(args.device).eval()
    return models


def plan(models: dict) -> list[tuple[str, dict]]:
    """Every row the checkpoints allow: full budget before J~ = 4, the latest checkpoint first, so a
    cut-short measurement already has DiT's final quality (the target) and ELIT-MB's curve down to it."""
    def step(label):
        return int(label.rsplit("@", 1)[1])
    rows = [(label, dict(latents_per_group=budget, guidance="none", scale=0.0, weak_budget=None))
            for label in models for budget in BUDGETS[family(label)]]
    return sorted(rows, key=lambda r: (r[1]["latents_per_group"] is not None, -step(r[0]), r[0]))


def results(rows: list[dict]) -> list[dict]:
    """The published schema: one row per model, seed, checkpoint and budget."""
    out = []
    for r in rows:
        run, step = r["model"].rsplit("@", 1)
        label, seed = run.rsplit("-s", 1)
        out.append({"model": label, "seed": int(seed), "step": int(step), "budget": r["latents_per_group"],
                    **{m: r.get(m) for m in METRICS}, "num_samples": r["num_samples"], "steps": r["steps"],
                    "gflops_per_image": r["gflops_per_image"]})
    return sorted(out, key=lambda r: (r["model"], r["budget"] or 99, r["seed"], r["step"]))


def curves(rows: list[dict], metric: str) -> dict:
    """(model, budget) -> {step: (mean, low, high) over seeds}."""
    out = {}
    for r in rows:
        if r.get(metric) is not None:
            out.setdefault((r["model"], r["budget"]), {}).setdefault(r["step"], []).append(r[metric])
    return {k: {s: (sum(v) / len(v), min(v), max(v)) for s, v in sorted(c.items())} for k, c in out.items()}


def steps_to_reach(curve: dict, target: float) -> float | None:
    """The first step (interpolated on log-steps) at which a mean curve falls to `target`, or None."""
    points = sorted((s, m) for s, (m, _, _) in curve.items())
    for (s0, m0), (s1, m1) in zip(points, points[1:]):
        if m0 <= target:
            return float(s0)
        if m1 <= target:
            frac = (m0 - target) / (m0 - m1)
            return math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))
    return float(points[0][0]) if points and points[0][1] <= target else None


def speedups(rows: list[dict]) -> list[str]:
    """For each metric: the step at which ELIT-MB (full budget) reaches DiT's last-checkpoint quality,
    over the seed means and then seed by seed (the spread); and the other way round, the step at
    which DiT reaches ELIT-MB's last-checkpoint quality."""
    def reach(curve, target_curve, who):
        last = max(target_curve)
        reached = steps_to_reach(curve, target_curve[last][0])
        return (f"{who} reaches it at ~{reached:.0f} steps ({last / reached:.2f}x fewer)" if reached
                else f"{who} does not reach it by {max(curve)} steps")

    names = {"dit": "DiT", "elit-mb": "ELIT-MB"}
    lines = []
    for metric in METRICS:
        c = curves(rows, metric)
        if not c.get(("dit", None)) or not c.get(("elit-mb", None)):
            continue
        for target, chaser in (("dit", "elit-mb"), ("elit-mb", "dit")):
            goal, run = c[(target, None)], c[(chaser, None)]
            last = max(goal)
            lines.append(f"{metric}: {names[target]} at {last} steps = {goal[last][0]:.2f} (seeds {goal[last][1]:.2f}-"
                         f"{goal[last][2]:.2f}); " + reach(run, goal, names[chaser]))
            for seed in sorted({r["seed"] for r in rows}):
                one = curves([r for r in rows if r["seed"] == seed], metric)
                g, r = one.get((target, None)), one.get((chaser, None))
                if g and r and max(g) == last:
                    lines.append(f"  seed {seed}: {names[target]} at {last} = {g[last][0]:.2f}; "
                                 + reach(r, g, names[chaser]))
    return lines


def plot(rows: list[dict], metric: str, path: pathlib.Path, x: str, gflops_per_step: dict) -> None:
    """Metric vs training steps (or training GFLOPs); a band over the seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (label, budget), c in sorted(curves(rows, metric).items(), key=lambda kv: (kv[0][0], kv[0][1] or 99)):
        scale = gflops_per_step[label] if x == "gflops" else 1.0
        steps = list(c)
        xs = [s * scale for s in steps]
        name = f"{label} " + ("full" if budget is None else f"J~={budget}")
        line, = ax.plot(xs, [c[s][0] for s in steps], marker="o", label=name, ls="-" if budget is None else "--")
        ax.fill_between(xs, [c[s][1] for s in steps], [c[s][2] for s in steps], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    if x == "steps":    # the checkpoints themselves as ticks
        ticks = sorted({r["step"] for r in rows})
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("training steps" if x == "steps" else "training GFLOPs (expected, 2 x MACs)")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title(f"Fashion-MNIST: {metric} vs training {x}; band: seed range")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def doc_table(published: list[dict]) -> str:
    """The rows as a markdown table (tables.md, and the doc's generated section)."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"   # noqa: E731
    lines = ["| model | budget | seed | step | FID | FD-FMNIST |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['budget'] or 'full'} | {r['seed']} | {r['step']} | {fmt(r['fid'])} | "
              f"{fmt(r['fd_fmnist'])} |" for r in published]
    return "\n".join(lines) + "\n"


def report(out: pathlib.Path, rows: list[dict], missing: int, publish: str | None) -> None:
    from study_fmnist import training_gflops_per_step
    from elit._io import atomic_write, copy_file
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    published = results(rows)
    per_step = {}   # from a run's resolved config.yaml (with its overrides), else the preset
    for label, config in MODELS.items():
        resolved = out / "runs" / run_name(label, SEEDS[0]) / "config.yaml"
        per_step[label] = training_gflops_per_step(str(resolved) if resolved.is_file() else config)
    files = {rep / "fashion-mnist-convergence.json": json.dumps(published, indent=1) + "\n"}
    for metric in METRICS:
        for x in ("steps", "gflops"):
            if any(r.get(metric) is not None for r in published):
                plot(published, metric, rep / f"convergence-{metric}-vs-{x}.png", x, per_step)
    lines = ["# Convergence rows (generated by scripts/study_convergence.py)", "", *doc_table(published).splitlines(),
             "", *speedups(published), "", "Training GFLOPs per step: "
             + ", ".join(f"{k} {v:.1f}" for k, v in per_step.items())]
    if missing:
        lines += ["", f"Not measured yet: {missing} rows (their checkpoints do not exist yet, or were not reached)."]
    files[rep / "tables.md"] = "\n".join(lines) + "\n"
    for path, text in files.items():
        with atomic_write(path) as f:
            f.write(text.encode())
    print("\n".join(lines[-4:]))
    if publish:
        from study_fmnist import fill_doc
        dest = pathlib.Path(publish)
        doc = dest / "fashion-mnist-convergence.md"
        text = fill_doc(doc.read_text(), {"convergence-table": doc_table(published)}) if doc.is_file() else None
        copies = {dest / "fashion-mnist-convergence.json": rep / "fashion-mnist-convergence.json",
                  **{dest / "fashion-mnist-convergence" / p.name: p for p in rep.glob("convergence-*.png")}}
        for dst, src in copies.items():
            copy_file(src, dst)
        with atomic_write(dest / "fashion-mnist-convergence" / "rows.json") as f:   # every shard's rows, merged
            f.write((json.dumps(rows, indent=1) + "\n").encode())
        if text is not None:   # the doc's table from the same rows (its prose is written by hand)
            with atomic_write(doc) as f:
                f.write(text.encode())
        print(f"[publish] {dest}: {len(published)} rows (the prose of fashion-mnist-convergence.md is written by hand)")


def scale_results(rows: list[dict]) -> list[dict]:
    """The scale point's published rows: results() with the width apart from the model's name."""
    out = []
    for r in results(rows):
        width = re.search(r"-w(\d+)$", r["model"])
        out.append({**r, "model": family(r["model"]), "width": int(width.group(1))})
    return out


def scale_section(scale: list[dict], base: list[dict]) -> str:
    """The convergence doc's scale section: the wider models beside the width-64 rows of the same
    step and seed, and ELIT-MB's FID and FD-FMNIST as a ratio of DiT's at each width (> 1: worse)."""
    if not scale:
        return "Not measured yet.\n"
    one = scale[0]
    rows = [{**r, "width": 64} for r in base if r["step"] == one["step"] and r["seed"] == one["seed"]] + scale
    fmt = lambda v: "-" if v is None else f"{v:.2f}"   # noqa: E731
    lines = [f"Seed {one['seed']}, {one['step']:,} training steps, {one['num_samples']:,} samples of "
             f"{one['steps']} Euler steps, unguided.", "",
             "| width | model | budget | GFLOPs/image | FID | FD-FMNIST |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['model']} | {r['budget'] or 'full'} | {r['gflops_per_image']:.2f} | "
              f"{fmt(r['fid'])} | {fmt(r['fd_fmnist'])} |"
              for r in sorted(rows, key=lambda r: (r["width"], r["model"], r["budget"] is not None, r["budget"] or 0))]
    lines.append("")
    ratios = {}
    for width in sorted({r["width"] for r in rows}):
        full = full_budget_rows(rows, width)
        if "dit" in full and "elit-mb" in full:
            ratios[width] = {m: full["elit-mb"][m] / full["dit"][m] for m in METRICS
                             if full["dit"][m] is not None and full["elit-mb"][m] is not None}
    for width, ratio in ratios.items():
        lines.append(f"- Width {width}: ELIT-MB / DiT at full budget: " +
                     ", ".join(f"{m} {v:.2f}x" for m, v in ratio.items()) + ".")
    widths = sorted(w for w in ratios if "fid" in ratios[w])
    if len(widths) > 1:
        first, last = ratios[widths[0]]["fid"], ratios[widths[-1]]["fid"]
        trend = "shrinks" if last < first else "grows" if last > first else "stays"
        lines.append(f"- ELIT-MB's FID deficit {trend} with width: {first:.2f}x at width {widths[0]}, "
                     f"{last:.2f}x at width {widths[-1]}.")
    lines += scale_costs(rows) + seed_spread(base, one["step"])
    return "\n".join(lines) + "\n"


def full_budget_rows(rows: list[dict], width: int) -> dict:
    """model -> its full-budget row at this width."""
    return {r["model"]: r for r in rows if r["width"] == width and r["budget"] is None}


def scale_costs(rows: list[dict]) -> list[str]:
    """Per width: what ELIT-MB's full budget costs beside DiT's and its FID excess in points, and what
    each lower budget saves against its full budget and costs in quality."""
    lines = []
    for width in sorted({r["width"] for r in rows}):
        full = full_budget_rows(rows, width)
        if "dit" not in full or "elit-mb" not in full:
            continue
        dit, elit = full["dit"], full["elit-mb"]
        excess = f", FID {elit['fid'] - dit['fid']:+.2f} points" if None not in (elit["fid"], dit["fid"]) else ""
        cost = elit["gflops_per_image"] / dit["gflops_per_image"]
        lines.append(f"- Width {width}: ELIT-MB's full budget costs {cost:.2f}x DiT's sampling GFLOPs{excess}.")
        for r in (r for r in rows if r["width"] == width and r["model"] == "elit-mb" and r["budget"] is not None):
            change = ", ".join(f"{m} {r[m] - elit[m]:+.2f}" for m in METRICS if None not in (r[m], elit[m]))
            lines.append(f"- Width {width}: ELIT-MB at J~ = {r['budget']} costs "
                         f"{r['gflops_per_image'] / elit['gflops_per_image']:.2f}x its full budget "
                         f"({r['gflops_per_image'] / dit['gflops_per_image']:.2f}x DiT's): {change}.")
    return lines


def seed_spread(base: list[dict], step: int) -> list[str]:
    """How far the width-64 seeds lie apart at this step (full budget), the yardstick for one seed."""
    fids = {}
    for r in base:
        if r["step"] == step and r["budget"] is None and r["fid"] is not None:
            fids.setdefault(r["model"], {})[r["seed"]] = r["fid"]
    spread = {m: max(v.values()) - min(v.values()) for m, v in sorted(fids.items()) if len(v) > 1}
    if not spread:
        return []
    seeds = sorted({s for v in fids.values() for s in v})
    return [f"- Width 64, seeds {', '.join(map(str, seeds))} at this step: FID spread "
            + ", ".join(f"{m} {v:.2f}" for m, v in spread.items()) + "."]


def scale_report(out: pathlib.Path, rows: list[dict], missing: int, publish: str | None) -> None:
    """OUT/report/fashion-mnist-scale.json and the section; --publish: the JSON into DIR and the
    section into DIR/fashion-mnist-convergence.md (beside the width-64 rows of DIR's convergence JSON)."""
    from elit._io import atomic_write
    from docs_tables import fill_doc
    published = scale_results(rows)
    dest = pathlib.Path(publish) if publish else ROOT / "docs" / "results"
    base_json = dest / "fashion-mnist-convergence.json"
    base = json.loads(base_json.read_text()) if base_json.is_file() else []
    section = scale_section(published, base)
    rep = out / "report"
    files = {rep / "fashion-mnist-scale.json": json.dumps(published, indent=1) + "\n", rep / "scale.md": section}
    if publish:
        doc = dest / "fashion-mnist-convergence.md"
        if not doc.is_file():
            raise SystemExit(f"[publish] {doc} does not exist: --publish takes the folder that holds it (docs/results)")
        files[doc] = fill_doc(doc.read_text(), {"convergence-scale": section})    # fails before anything is written
        files[dest / "fashion-mnist-scale.json"] = files[rep / "fashion-mnist-scale.json"]
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode())
    print(section + (f"Not measured yet: {missing} rows.\n" if missing else ""), end="")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2, help="trainings side by side")
    ap.add_argument("--num", type=int, default=2000, help="samples per row")
    ap.add_argument("--steps", type=int, default=40, help="Euler steps (the issue: 40)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--measure-only", action="store_true", help="skip training; measure the checkpoints so far")
    ap.add_argument("--report-only", action="store_true", help="write OUT/report from the rows measured so far")
    ap.add_argument("--publish", metavar="DIR", help="copy the report's JSON, plots and rows into DIR (docs/results)")
    ap.add_argument("--shard", metavar="K/N", help="with --measure-only: measure every N-th row of the plan, from the K-th")
    ap.add_argument("--only", metavar="PATTERNS", help="with --measure-only: just the checkpoints whose label "
                    "matches one of these comma-separated patterns (e.g. 'dit-s1@8000,elit-mb-s1@*'), into "
                    "their own rows file, so it can run beside another measurer as soon as its checkpoints exist")
    ap.add_argument("--compile", action="store_true", help="elit.compile_blocks each model (CPU: ~20%% faster "
                    "sampling after ~1 min of compiling per model; outputs differ from eager by ~1e-6)")
    ap.add_argument("--threads", type=int, help="torch threads for measuring (default: cores / N)")
    ap.add_argument("--smoke", action="store_true", help="tiny models, 4 training steps, 16 samples: checks the pipeline")
    ap.add_argument("--width", type=int, help=f"the scale point: both models at this width, seed 0, "
                    f"{SCALE_STEPS:,} steps, measured at the last step")
    ap.add_argument("--progress", metavar="DIR", help=f"with --width: rows and unfinished trainings carried between "
                    f"sessions, restored before anything else ('' to ignore; default {SCALE_PROGRESS})")
    ap.add_argument("--save-progress", action="store_true", help="with --width: keep OUT's rows and unfinished "
                    "trainings in --progress and publish finished models to --models (before a session ends)")
    ap.add_argument("--models", metavar="DIR", help=f"with --width: the published models, taken as trained "
                    f"(default {SCALE_MODELS}; --smoke: OUT/published)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    args.seeds, args.checkpoints = SEEDS, CHECKPOINTS
    overrides, metrics, ckpt_every = [], METRICS, CHECKPOINTS[0]
    if args.smoke:
        args.checkpoints = (2, 4)
        overrides = ["model.hidden_size=32", "model.depth=3", "model.num_heads=2", "log.sample_every=0",
                     "log.sample_steps=2", "train.warmup_steps=1"]
        args.num, args.steps, args.batch_size, metrics = 16, 2, 16, ("fd_fmnist",)
        ckpt_every = 2
    if args.width:
        overrides.append(f"model.hidden_size={args.width}")   # after the smoke's width: this one wins
        args.seeds, args.checkpoints = (0,), (args.checkpoints[-1] if args.smoke else SCALE_STEPS,)
        ckpt_every = 2 if args.smoke else 1000
        if args.progress is None:       # the smoke's progress is not the real study's
            args.progress = str(out / "progress") if args.smoke else str(ROOT / SCALE_PROGRESS)
        models_dir = pathlib.Path(args.models or (out / "published" if args.smoke else ROOT / SCALE_MODELS))
        out.mkdir(parents=True, exist_ok=True)
        progress = pathlib.Path(args.progress) if args.progress else None
        if progress:
            study_progress.restore_rows(progress, out)
            study_progress.restore_runs(progress / "runs", out / "runs")
        study_progress.reuse_published(out / "runs", models_dir, [run_name(m, 0) for m in study_models(args.width)])
    elif args.progress or args.save_progress or args.models:
        raise SystemExit("--progress, --save-progress and --models are for the scale point (--width): "
                         "the convergence runs are done")
    labels = study_models(args.width)
    if args.save_progress:
        if not args.progress:
            raise SystemExit("--save-progress needs --progress DIR (where the next session finds the rows and checkpoints)")
        from study_fmnist import load_rows
        study_progress.keep_rows(load_rows(out), progress)
        study_progress.keep_runs(out / "runs", progress / "runs", models_dir)
        print(f"[progress] rows and unfinished trainings kept in {progress}; finished models in {models_dir}")
        return 0
    if not (args.report_only or args.measure_only):
        train(out, args, overrides, labels, ckpt_every)

    import torch
    from elit.eval.sweep import row_key, run_sweep, setting_key
    from study_fmnist import load_rows, reference_files
    if (args.shard or args.only) and not args.measure_only:
        raise SystemExit("--shard and --only select rows to measure: add --measure-only (and train first without it)")
    shard, shards = (int(v) for v in args.shard.split("/")) if args.shard else (0, 1)
    if not 0 <= shard < shards:
        raise SystemExit(f"--shard {args.shard}: K must be in 0..N-1 (e.g. --shard 0/2 and --shard 1/2)")
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // shards))
    models = checkpoint_models(out, args, labels)
    pairs = plan(models)
    if args.compile and not args.report_only:
        from elit.model import compile_blocks
        for model in models.values():
            compile_blocks(model)
    if not args.report_only:
        refs = reference_files(out, metrics, args.device, args.smoke)
        measured = {row_key(r) for r in load_rows(out)}
        # Shards split the whole plan, not what is left of it: a shard that starts after another has
        # finished rows would otherwise split a shorter list and leave some rows to no one.
        todo = [(label, s) for label, s in pairs[shard::shards]
                if setting_key(label, s, args.steps, "euler") not in measured]
        rows_file = out / f"rows-{shard}.json"
        if args.only:
            patterns = args.only.split(",")
            todo = [(label, s) for label, s in todo if any(fnmatch.fnmatchcase(label, p) for p in patterns)]
            rows_file = out / ("rows-only-" + re.sub(r"[^A-Za-z0-9]+", "_", args.only).strip("_") + ".json")
        skipped = "already measured" + (" or not selected" if args.only else "")
        print(f"[measure] shard {shard}/{shards}: {len(pairs[shard::shards]) - len(todo)} of its rows {skipped}, "
              f"{len(todo)} to go", flush=True)
        run_sweep(models, todo, num=args.num, steps=args.steps, sampler="euler", metrics=metrics,
                  ref=refs, batch_size=args.batch_size, json_path=rows_file, progress=False,
                  fd_method="eigh", net_kwargs={"device": args.device})
    if shards > 1 and not args.report_only:
        # The other shards may still be measuring: a report now would miss their rows, and one written
        # after theirs would replace a complete report with a stale one.
        print(f"[measure] shard {shard}/{shards} done; when every shard is, run --report-only", flush=True)
        return 0
    rows = load_rows(out)
    done = {setting_key(label, s, args.steps, "euler") for label, s in pairs}
    rows = [r for r in rows if row_key(r) in done]
    expected = sum(len(BUDGETS[family(label)]) for label in labels) * len(args.seeds) * len(args.checkpoints)
    if args.width:
        scale_report(out, rows, expected - len(rows), args.publish)
    else:
        report(out, rows, expected - len(rows), args.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
