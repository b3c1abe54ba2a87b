"""The small-scale reproduction study (issue 7): DiT vs single-budget ELIT vs multi-budget ELIT on
Fashion-MNIST at the token geometry of the paper's 256px setting, measured at every budget and
guidance mode. End to end and resumable: rerun the same command and it continues where it stopped
(training resumes from its checkpoints, the sweep from the rows already in OUT/rows-*.json).

    python scripts/study_fmnist.py --out runs/study --jobs 2        # the full study, 2 processes
    python scripts/study_fmnist.py --out runs/study --report-only   # tables/plots from the rows so far
    python scripts/study_fmnist.py --out runs/study --report-only --publish docs/results   # and the docs
    python scripts/study_fmnist.py --out /tmp/s --smoke            # minutes: tiny settings, same code

Stages: train the three configs (src/elit/configs/study-fmnist-*.yaml) with the real `elit train`,
measure reference statistics of the Fashion-MNIST test set once per feature network, sweep
budgets x guidance with `elit.evaluate.run_sweep` (rows in priority order: a run cut short has
answered the main questions first), then write OUT/report/ (results JSON in the schema of
docs/results/fashion-mnist.json, tables, the quality-vs-GFLOPs plot, sample grids).
With --jobs N, N trainings run side by side and the sweep is split round-robin over N processes,
each with cpu_count/N torch threads (small models use several cores poorly; processes scale).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # the sibling scripts, also when loaded by path
from docs_tables import fill_doc  # noqa: E402  (one marker convention for every generated doc)

MODELS = {  # label in the results -> training config
    "dit": "study-fmnist-dit",
    "elit": "study-fmnist-elit",
    "elit-mb": "study-fmnist-elit-mb",
    "uvit": "study-fmnist-uvit",              # issue 14: the paper's U-ViT, same size and steps
    "elit-uvit-mb": "study-fmnist-elit-uvit-mb",
    "hdit": "study-fmnist-hdit",              # issue 16: the paper's HDiT (hourglass), same size and steps
    "elit-hdit-mb": "study-fmnist-elit-hdit-mb",
}
UVIT_BUDGETS = [16, 4, 2, 1]   # issue 14: ELIT-U-ViT-MB unguided at these budgets
HDIT_BUDGETS = [16, 4, 1]      # issue 16: ELIT-HDiT-MB unguided at these budgets
BUDGETS = [1, 2, 4, 8, 16]
SCALES = [0.5, 2.0]      # lambda: a small and a moderate guidance scale (w = 1.5 and 3)
METRICS = ("fid", "fd_fmnist")


def train(out: pathlib.Path, device: str, overrides: list[str], jobs: int) -> dict:
    """Train (or resume) every model with the real CLI, `jobs` at a time; returns label -> wall seconds."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = []
    for label, config in MODELS.items():
        run_dir = out / "runs" / label
        if (run_dir / "model" / "model.safetensors").is_file():
            print(f"[train] {label}: done ({run_dir / 'model'})")
            continue
        cmd = [sys.executable, "-m", "elit", "train", "--config", config, "--out", str(run_dir),
               f"system.device={device}", *([f"system.threads={threads}"] if jobs > 1 else []), *overrides]
        pending.append((label, cmd))
    seconds, running = {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            label, cmd = pending.pop(0)
            print("[train] " + " ".join(cmd[2:]), flush=True)
            running[label] = (subprocess.Popen(cmd), time.time())
        time.sleep(2)
        for label, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[label]
            if proc.returncode:
                for other, _ in running.values():
                    other.terminate()
                raise SystemExit(f"[train] {label} failed (exit {proc.returncode}); rerun to resume it")
            seconds[label] = round(time.time() - start, 1)
    return seconds


def _row(budget, guidance="none", scale=0.0, weak=None) -> dict:
    return dict(latents_per_group=budget, guidance=guidance, scale=float(scale), weak_budget=weak)


def sweep_plan(models: dict) -> list[tuple[str, dict]]:
    """Every (model, setting) row of the study, most informative first:
    1. the claims at the moderate scale: the three models unguided at full budget, ELIT-MB's
       budget curve, and CFG / cheap CFG / autoguidance at full budget;
    2. the same at the small scale;
    3. the rest: single-budget ELIT at budgets it was never trained for, then guidance at every
       lower budget of ELIT-MB.
    DiT has one budget and no weak pass (no ccfg / ag). ccfg / ag use the lowest trained budget."""
    from elit.eval.sweep import sweep_settings
    small, moderate = SCALES
    J = models["elit-mb"].budgets[-1]
    low = models["elit-mb"].budgets[0]
    J_single = models["elit"].budgets[-1]
    plan = [("dit", _row(None)), ("elit", _row(J_single)), ("elit-mb", _row(J)),
            ("elit-mb", _row(1)), ("elit-mb", _row(4)),
            ("dit", _row(None, "cfg", moderate)), ("elit-mb", _row(J, "cfg", moderate)),
            ("elit-mb", _row(J, "ccfg", moderate, low)), ("elit-mb", _row(J, "ag", moderate, low)),
            ("elit", _row(J_single, "cfg", moderate)), ("elit-mb", _row(2)), ("elit-mb", _row(8)),
            ("dit", _row(None, "cfg", small)), ("elit", _row(J_single, "cfg", small)),
            ("elit-mb", _row(J, "cfg", small)), ("elit-mb", _row(J, "ccfg", small, low)),
            ("elit-mb", _row(J, "ag", small, low))]
    # The rest: single-budget ELIT below its trained budget first (cheap rows, and the paper's
    # Table 8 comparison), then guided ELIT-MB from the knee of its budget curve outwards.
    lower = [b for b in dict.fromkeys((4, 8, 2, 1, *BUDGETS)) if b != J]   # knee first, deduplicated
    rest = [("elit", _row(b)) for b in lower if b != J_single]
    for scale in (moderate, small):
        for r in sweep_settings(lower, ["cfg", "ccfg", "ag"], [scale], low, low):
            # cheap CFG whose weak pass is the main budget is CFG itself (same passes): not rerun
            if not (r["guidance"] == "ccfg" and r["weak_budget"] == r["latents_per_group"]):
                rest.append(("elit-mb", r))
    # Issue 14: the same comparison on the U-ViT backbone (paper Table 1), unguided.
    uvit = [("uvit", _row(None))] + [("elit-uvit-mb", _row(b)) for b in UVIT_BUDGETS]
    # Issue 16: and on HDiT (paper Table 1: ELIT's gain over HDiT lies between DiT's and U-ViT's).
    hdit = [("hdit", _row(None))] + [("elit-hdit-mb", _row(b)) for b in HDIT_BUDGETS]
    return plan + rest + uvit + hdit


def training_gflops_per_step(config: str) -> float:
    """Expected training FLOPs of one step: 3 x forward (forward + backward) x batch, averaged over
    the budgets the config draws uniformly. `config`: a preset name or a run's resolved config.yaml."""
    from elit.cost import analytic_gflops
    from elit.train.config import load_config
    cfg = load_config(config)
    model_cfg, train = cfg.model, cfg.train
    space = model_cfg.budget_space
    if not model_cfg.elastic:
        per_image = analytic_gflops(model_cfg)
    elif train.budget_draw == "multi":
        lo = train.budget_min or space.min_budget
        hi = train.budget_max or space.latents_per_group
        per_image = sum(analytic_gflops(model_cfg, b) for b in range(lo, hi + 1)) / (hi - lo + 1)
    else:
        per_image = analytic_gflops(model_cfg, None if train.budget_draw == "full" else int(train.budget_draw))
    return 3 * per_image * train.global_batch_size


def reference_files(out: pathlib.Path, metrics, device: str, smoke: bool) -> dict[str, str]:
    """net -> OUT/ref-<net>-test.npz: the whole Fashion-MNIST test set (10k images; 200 for --smoke),
    measured once per feature network the metrics need and reused by every later run."""
    from elit.eval.metrics.compute import METRIC_NET, compute_reference
    refs = {}
    for net in sorted({METRIC_NET[m] for m in metrics}):
        path = out / f"ref-{net}-test.npz"
        if not path.is_file():
            compute_reference("fmnist-test", net=net, out=str(path), num=200 if smoke else None, device=device)
        refs[net] = str(path)
    return refs


def load_rows(out: pathlib.Path) -> list[dict]:
    """Every measured row of every shard file (OUT/rows-*.json), one per setting."""
    from elit.eval.sweep import row_key
    rows = {}
    for path in sorted(out.glob("rows-*.json")):
        for r in json.loads(path.read_text()):
            rows[row_key(r)] = r
    return list(rows.values())


def order_rows(rows: list[dict], plan: list[tuple[str, dict]], args) -> tuple[list[dict], list[tuple[str, dict]]]:
    """The measured rows in plan order, and the planned (label, setting) pairs not measured yet."""
    from elit.eval.sweep import row_key, setting_key
    by_key = {row_key(r): r for r in rows}
    done, missing = [], []
    for label, setting in plan:
        key = setting_key(label, setting, args.steps, "euler")
        if key in by_key:
            done.append(by_key[key])
        else:
            missing.append((label, setting))
    return done, missing


def report(out: pathlib.Path, rows: list[dict], missing: list, models: dict, wall: dict, args, metrics) -> None:
    """OUT/report: results JSON, markdown tables, the plots and a sample grid per model."""
    from elit.eval.report import budget_guidance_table, format_table, plot_quality_vs_gflops
    from elit.cost import analytic_gflops
    from elit.sampling import sample, sampling_gflops
    from elit.data.fashion_mnist import CLASS_NAMES
    from elit.viz import budget_grid

    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    results = [{k: r.get(k) for k in ("model", "latents_per_group", "guidance", "scale", "weak_budget", "fid",
                                      "fd_fmnist", "num_samples", "gflops_per_image", "steps", "images_per_s")}
               for r in rows]
    (rep / "fashion-mnist.json").write_text(json.dumps(results, indent=1) + "\n")
    for metric in metrics:
        if any(r.get(metric) is not None for r in rows):
            plot_quality_vs_gflops(rows, metric, rep / f"{metric}-vs-gflops.png",
                                   title=f"Fashion-MNIST: {metric} vs sampling GFLOPs per image")
    seeds = list(range(10))
    for label, model in models.items():
        budgets = [b for b in BUDGETS if b in model.budgets] or [None]
        images = [sample(model, seeds, budget=b, steps=args.steps) for b in budgets]
        labels = [f"J~={b}  {analytic_gflops(model.config, b):.2f} GF" if b else
                  f"{MODEL_NAMES[label]}  {analytic_gflops(model.config):.2f} GF" for b in budgets]
        budget_grid(images, labels, rep / f"samples-{label}.png",
                    column_labels=[CLASS_NAMES[seed % 10] for seed in seeds])   # seed i has label i % 10
    lines = ["# Study results (generated by scripts/study_fmnist.py)", "",
             f"Samples per row: {args.num}; {args.steps} Euler steps; seeds 0..{args.num - 1}, label = seed % 10.",
             "GFLOPs: per image for the whole sampling run, 2 x multiply-adds.", "",
             "Training cost per step (expected, 2 x MACs, forward + backward = 3 x forward):", ""]
    for label, config in MODELS.items():
        resolved = out / "runs" / label / "config.yaml"   # with any overrides the run was given
        lines.append(f"- {label} ({config}): {training_gflops_per_step(str(resolved)):.1f} GFLOPs/step"
                     + (f", trained in {wall[label]:.0f} s here" if label in wall else ""))
    lines += ["", "```", format_table(rows, metrics), "```", ""]
    for label in models:                     # each model's budget curve per guidance mode and scale
        for metric in metrics:
            if any(r["model"] == label and r.get(metric) is not None for r in rows):
                lines += [f"{label}, {metric}:", "", budget_guidance_table(rows, label, metric), ""]
    if missing:
        lines += [f"Not measured yet ({len(missing)} rows; rerun the study to continue):", "", "```"]
        lines += [f"{label:<8} J~={s['latents_per_group'] or '-'} {s['guidance']} lambda={s['scale']:g} "
                  f"({sampling_gflops(models[label].config, steps=args.steps, budget=s['latents_per_group'], guidance=s['guidance'], weak_budget=s['weak_budget'], scale=s['scale'] or None):.2f} GFLOPs/img)"
                  for label, s in missing]
        lines += ["```", ""]
    protocols = rows[-1]["protocols"] if rows else {}
    lines += [f"- {m}: {p}" for m, p in protocols.items()]
    (rep / "tables.md").write_text("\n".join(lines) + "\n")
    print(f"[report] {rep}")


MODEL_NAMES = {"dit": "DiT", "elit": "ELIT", "elit-mb": "ELIT-MB", "uvit": "U-ViT", "elit-uvit-mb": "ELIT-U-ViT-MB",
               "hdit": "HDiT", "elit-hdit-mb": "ELIT-HDiT-MB"}
METRIC_NAMES = {"fid": "FID", "fd_fmnist": "FD-FMNIST"}
GRID_NOTE = ("(columns: guidance mode and lambda; '-': not defined at J~ = 1, where cheap CFG would repeat "
             "CFG, and autoguidance has no weaker pass)")


def doc_sections(rows: list[dict], metrics) -> dict[str, str]:
    """The generated parts of docs/results/fashion-mnist.md, by marker name: the results table
    (unguided rows first, then by scale; DiT, ELIT, ELIT-MB; largest budget first) and ELIT-MB's
    budget x guidance grids."""
    from elit.eval.report import GUIDANCE_NAMES, budget_guidance_table
    guidance = {**GUIDANCE_NAMES, "ag": "autoguidance"}    # the table has room for the full name
    models, modes = list(MODEL_NAMES), list(guidance)
    ordered = sorted(rows, key=lambda r: (r["guidance"] != "none", r["scale"], models.index(r["model"]),
                                          -(r["latents_per_group"] or 99), modes.index(r["guidance"])))
    head = ["model", "J~", "guidance", "lambda", "weak J~", *(METRIC_NAMES[m] for m in metrics),
            "GFLOPs/img", "img/s"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ordered:
        cells = [MODEL_NAMES[r["model"]], r["latents_per_group"] or "-", guidance[r["guidance"]],
                 f"{r['scale']:g}", r["weak_budget"] or "-", *(f"{r[m]:.2f}" for m in metrics),
                 f"{r['gflops_per_image']:.2f}", f"{r['images_per_s']:.2f}"]
        table.append("| " + " | ".join(map(str, cells)) + " |")
    grids = []
    for m in metrics:
        grids += [f"**ELIT-MB, {METRIC_NAMES[m]}** {GRID_NOTE}", "", budget_guidance_table(rows, "elit-mb", m), ""]
    return {"results-table": "\n".join(table) + "\n", "budget-grids": "\n".join(grids)}


def publish(out: pathlib.Path, rows: list[dict], metrics, dest: pathlib.Path) -> None:
    """Copy the report into the docs (DEST/fashion-mnist.json, the figures, the resumable rows) and
    regenerate the doc's tables, so that the published numbers are the measured ones."""
    doc = dest / "fashion-mnist.md"
    if not doc.is_file():
        raise SystemExit(f"[publish] {doc} does not exist: --publish takes the folder that holds it (docs/results)")
    text = fill_doc(doc.read_text(), doc_sections(rows, metrics))   # fails before anything is written
    figures = dest / "fashion-mnist"
    files = {figures / png.name: png.read_bytes() for png in sorted((out / "report").glob("*.png"))}
    files[dest / "fashion-mnist.json"] = (out / "report" / "fashion-mnist.json").read_bytes()
    files[figures / "rows-0.json"] = (json.dumps(rows, indent=1) + "\n").encode()
    files[doc] = text.encode()
    figures.mkdir(parents=True, exist_ok=True)
    from elit._io import atomic_write
    for path, content in files.items():   # each file whole or not at all
        with atomic_write(path) as f:
            f.write(content)
    print(f"[publish] {dest}: {len(rows)} rows")


def sweep(out: pathlib.Path, models: dict, pairs: list, refs: dict, args, metrics, shard: int) -> None:
    from elit.eval.sweep import run_sweep
    run_sweep(models, pairs, num=args.num, steps=args.steps, sampler="euler", metrics=metrics, ref=refs,
              batch_size=args.batch_size, json_path=out / f"rows-{shard}.json", progress=False,
              net_kwargs={"device": args.device}, fd_method=args.fd_method)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side, and sweep processes")
    ap.add_argument("--num", type=int, default=2000, help="samples per row (the issue asks for >= 2000)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps (paper: 40 Euler; 20 fits the CPU budget)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated (fid costs ~0.26 s of one CPU "
                    "core per image for Inception, plus ~1 min per row for the 2048-d matrix square root)")
    ap.add_argument("--fd-method", default="sqrtm", choices=["sqrtm", "eigh"])
    ap.add_argument("--report-only", action="store_true", help="write OUT/report from the rows measured so far")
    ap.add_argument("--publish", metavar="DIR", help="then copy the report into DIR (docs/results) and "
                    "regenerate the tables of DIR/fashion-mnist.md between its section markers")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny models, few steps and samples, the fast domain metric only: checks the pipeline")
    ap.add_argument("--override", action="append", default=[], help="extra `elit train` overrides (key=value)")
    ap.add_argument("--shard", help=argparse.SUPPRESS)  # internal: "K:PLAN.json", one sweep process of --jobs
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    overrides = list(args.override)
    if args.smoke:
        overrides += ["train.max_steps=4", "model.hidden_size=32", "model.depth=6", "model.num_heads=2",   # depth 6: the HDiT hourglass (merge 2, split 4) fits
                      "log.ckpt_every=2", "log.sample_every=0", "log.sample_steps=2", "log.progress=false"]
        args.num, args.steps, args.batch_size, args.metrics = 16, 2, 16, "fd_fmnist"
    metrics = tuple(m for m in args.metrics.split(",") if m)
    wall_file = out / "train_seconds.json"
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    if not args.report_only and not args.shard:
        wall.update(train(out, args.device, overrides, args.jobs))
        wall_file.parent.mkdir(parents=True, exist_ok=True)
        wall_file.write_text(json.dumps(wall, indent=1) + "\n")

    import torch
    from elit.hub import load_pretrained
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shard or args.jobs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))
    models = {label: load_pretrained(out / "runs" / label / "model", device=args.device) for label in MODELS}
    refs = {} if args.report_only else reference_files(out, metrics, args.device, args.smoke)
    if args.shard:
        k, plan_file = args.shard.split(":", 1)
        pairs = [(label, s) for label, s in json.loads(pathlib.Path(plan_file).read_text())]
        sweep(out, models, pairs, refs, args, metrics, int(k))
        return 0
    plan = sweep_plan(models)
    if not args.report_only:
        done, todo = order_rows(load_rows(out), plan, args)
        print(f"[sweep] {len(done)} rows measured, {len(todo)} to go", flush=True)
        if args.jobs == 1 or not todo:
            sweep(out, models, todo, refs, args, metrics, 0)
        else:   # round-robin over processes, so every process walks down the priority list
            procs = []
            for k in range(args.jobs):
                plan_file = out / f"plan-{k}.json"
                plan_file.write_text(json.dumps(todo[k::args.jobs], indent=1))
                cmd = [sys.executable, __file__, "--out", str(out), "--device", args.device, "--jobs",
                       str(args.jobs), "--num", str(args.num), "--steps", str(args.steps), "--batch-size",
                       str(args.batch_size), "--metrics", ",".join(metrics), "--fd-method", args.fd_method,
                       "--shard", f"{k}:{plan_file}"]
                procs.append(subprocess.Popen(cmd))
            codes = [p.wait() for p in procs]   # wait for every process: the others' rows still count
            if any(codes):
                raise SystemExit(f"[sweep] sweep process(es) {[k for k, c in enumerate(codes) if c]} failed "
                                 "(see above); rerun to resume")
    rows, missing = order_rows(load_rows(out), plan, args)
    report(out, rows, missing, models, wall, args, metrics)
    if args.publish:
        publish(out, rows, metrics, pathlib.Path(args.publish))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
