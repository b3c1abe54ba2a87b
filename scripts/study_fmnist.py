"""The small-scale reproduction study (issue 7): DiT vs single-budget ELIT vs multi-budget ELIT on
Fashion-MNIST at the token geometry of the paper's 256px setting, measured at every budget and
guidance mode. End to end and resumable: rerun the same command and it continues where it stopped
(training resumes from its checkpoints, the sweep from the rows already in rows.json).

    python scripts/study_fmnist.py --out runs/study                # the full study
    python scripts/study_fmnist.py --out /tmp/s --smoke            # minutes: tiny settings, same code

Stages: train the three configs (src/elit/configs/study-fmnist-*.yaml) with the real `elit train`,
measure reference statistics of the Fashion-MNIST test set once per feature network, sweep
budgets x guidance with `elit.evaluate.run_sweep`, then write OUT/report/ (results JSON in the
schema of docs/results/fashion-mnist.json, tables, the quality-vs-GFLOPs plot, sample grids).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

MODELS = {  # label in the results -> training config
    "dit": "study-fmnist-dit",
    "elit": "study-fmnist-elit",
    "elit-mb": "study-fmnist-elit-mb",
}
BUDGETS = [1, 2, 4, 8, 16]
SCALES = [0.5, 2.0]      # lambda: a small and a moderate guidance scale (w = 1.5 and 3)
METRICS = ("fid", "fd_fmnist")


def train(out: pathlib.Path, device: str, overrides: list[str]) -> dict:
    """Train (or resume) every model with the real CLI; returns label -> wall seconds of this call."""
    seconds = {}
    for label, config in MODELS.items():
        run_dir = out / "runs" / label
        if (run_dir / "model" / "model.safetensors").is_file():
            print(f"[train] {label}: done ({run_dir / 'model'})")
            continue
        cmd = [sys.executable, "-m", "elit", "train", "--config", config, "--out", str(run_dir),
               f"system.device={device}", *overrides]
        print("[train] " + " ".join(cmd[2:]), flush=True)
        start = time.time()
        subprocess.run(cmd, check=True)
        seconds[label] = round(time.time() - start, 1)
    return seconds


def sweep_plan(models: dict) -> dict:
    """Which rows each model gets (see the study's docs for why)."""
    from elit.evaluate import sweep_settings
    plan = {}
    for label, model in models.items():
        if not model.budgets:                                   # DiT: one budget
            plan[label] = sweep_settings([None], ["none", "cfg"], SCALES, None, None)
        elif label == "elit":                                   # single budget: trained at J only
            J = model.budgets[-1]
            plan[label] = sweep_settings([J], ["none", "cfg"], SCALES, None, None) + \
                sweep_settings([b for b in BUDGETS if b != J], ["none"], SCALES, None, None)
        else:                                                   # multi-budget: everything
            plan[label] = sweep_settings(BUDGETS, ["none", "cfg", "ccfg", "ag"], SCALES, 1, model.budgets[0])
    return plan


def training_gflops_per_step(config: str) -> float:
    """Expected training FLOPs of one step: 3 x forward (forward + backward) x batch, averaged over
    the budgets the config draws uniformly. `config`: a preset name or a run's resolved config.yaml."""
    from elit.flops import analytic_gflops
    from elit.train.config import load_config
    cfg = load_config(config)
    model_cfg, train = cfg.model, cfg.train
    if not model_cfg.elit:
        per_image = analytic_gflops(model_cfg)
    elif train.budget == "multi":
        lo = train.budget_min or model_cfg.min_budget or 1
        hi = train.budget_max or (model_cfg.latents_per_group or 16)
        per_image = sum(analytic_gflops(model_cfg, b) for b in range(lo, hi + 1)) / (hi - lo + 1)
    else:
        per_image = analytic_gflops(model_cfg, None if train.budget == "full" else int(train.budget))
    return 3 * per_image * train.global_batch_size


def report(out: pathlib.Path, rows: list[dict], models: dict, wall: dict, args, metrics) -> None:
    """OUT/report: results JSON, markdown tables, the plot and a sample grid per model."""
    from elit.evaluate import format_table, plot_quality_vs_gflops
    from elit.flops import analytic_gflops
    from elit.sampling import sample
    from elit.viz import budget_grid

    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    results = [{k: r.get(k) for k in ("model", "latents_per_group", "guidance", "scale", "weak_budget", "fid",
                                      "fd_fmnist", "num_samples", "gflops_per_image", "steps", "images_per_s")}
               for r in rows]
    (rep / "fashion-mnist.json").write_text(json.dumps(results, indent=1) + "\n")
    for metric in metrics:
        plot_quality_vs_gflops(rows, metric, rep / f"{metric}-vs-gflops.png",
                               title=f"Fashion-MNIST: {metric} vs sampling GFLOPs per image")
    seeds = list(range(10))
    for label, model in models.items():
        budgets = [b for b in BUDGETS if b in model.budgets] or [None]
        images = [sample(model, seeds, budget=b, steps=args.steps) for b in budgets]
        labels = [f"J~={b}  {analytic_gflops(model.config, b):.2f} GF" if b else
                  f"DiT  {analytic_gflops(model.config):.2f} GF" for b in budgets]
        budget_grid(images, labels, rep / f"samples-{label}.png")
    lines = ["# Study results (generated by scripts/study_fmnist.py)", "",
             f"Samples per row: {args.num}; {args.steps} Euler steps; seeds 0..{args.num - 1}, label = seed % 10.",
             "GFLOPs: per image for the whole sampling run, 2 x multiply-adds.", "",
             "Training cost per step (expected, 2 x MACs, forward + backward = 3 x forward):", ""]
    for label, config in MODELS.items():
        resolved = out / "runs" / label / "config.yaml"   # with any overrides the run was given
        lines.append(f"- {label} ({config}): {training_gflops_per_step(str(resolved)):.1f} GFLOPs/step"
                     + (f", trained in {wall[label]:.0f} s here" if label in wall else ""))
    lines += ["", "```", format_table(rows, metrics), "```", ""]
    protocols = rows[-1]["protocols"] if rows else {}
    lines += [f"- {m}: {p}" for m, p in protocols.items()]
    (rep / "tables.md").write_text("\n".join(lines) + "\n")
    print(f"[report] {rep}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num", type=int, default=2000, help="samples per row (the issue asks for >= 2000)")
    ap.add_argument("--steps", type=int, default=40, help="sampling steps (paper: 40 Euler)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated (fid needs ~1 min of CPU per row "
                    "for the 2048-d matrix square root alone)")
    ap.add_argument("--fd-method", default="sqrtm", choices=["sqrtm", "eigh"])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny models, few steps and samples, the fast domain metric only: checks the pipeline")
    ap.add_argument("--override", action="append", default=[], help="extra `elit train` overrides (key=value)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    overrides = list(args.override)
    if args.smoke:
        overrides += ["train.max_steps=4", "model.hidden_size=32", "model.depth=3", "model.num_heads=2",
                      "log.ckpt_every=2", "log.sample_every=0", "log.sample_steps=2", "log.progress=false"]
        args.num, args.steps, args.batch_size, args.metrics = 16, 2, 16, "fd_fmnist"
    metrics = tuple(m for m in args.metrics.split(",") if m)
    wall_file = out / "train_seconds.json"
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    wall.update(train(out, args.device, overrides))
    wall_file.parent.mkdir(parents=True, exist_ok=True)
    wall_file.write_text(json.dumps(wall, indent=1) + "\n")

    import torch
    from elit.evaluate import run_sweep
    from elit.hub import load_pretrained
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    models = {label: load_pretrained(out / "runs" / label / "model", device=device) for label in MODELS}
    # The reference is the whole Fashion-MNIST test set (10k images), measured once per network.
    refs = {}
    from elit.metrics.evaluate import METRIC_NET
    for net in sorted({METRIC_NET[m] for m in metrics}):
        path = out / f"ref-{net}-test.npz"
        if not path.is_file():
            from elit.metrics.evaluate import compute_reference
            compute_reference("fmnist-test", net=net, out=str(path), num=200 if args.smoke else None,
                              device=device)
        refs[net] = str(path)
    rows = run_sweep(models, sweep_plan(models), num=args.num, steps=args.steps, sampler="euler", metrics=metrics,
                     ref=refs, batch_size=args.batch_size, json_path=out / "rows.json",
                     net_kwargs={"device": device}, fd_method=args.fd_method)
    report(out, rows, models, wall, args, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
