"""Training loss in fp32 and under bf16 autocast, the same run otherwise (issue 28).

    python benchmarks/precision_training.py --out runs/precision-training          # 1,000 steps each
    python benchmarks/precision_training.py --out runs/precision-training \\
        --json docs/performance.json --key precision-training --plot docs/images/precision-training.png
    python benchmarks/precision_training.py --out /tmp/p --smoke                   # 10 steps of batch 16 each, CI

Trains the study config (default study-fmnist-elit-mb: ELIT-MB, width 64, batch 48) twice with the same
seed, so the same data order, noise, times and budget draws: once with system.precision=fp32, once
with system.precision=bf16 (the model's passes under bf16 autocast; weights, optimizer and EMA stay
fp32). Each is a plain `elit train` process on one thread; a rerun resumes them from their
checkpoints. Then it compares the logged losses (each the mean over the 50 steps before it): the
mean relative difference over the run and over its last fifth, and the seconds per step of each.
Where the CPU has no AVX512-BF16 / AMX, bf16 is torch's software path: its seconds say what auto
avoids here, and only the losses say what bf16 costs in quality.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def train(out: pathlib.Path, precision: str, args) -> None:
    run = out / precision
    if (run / "log.jsonl").exists() and max(read_log(run), default=0) >= args.steps:
        return       # trained this far already (a longer --steps resumes it from its last checkpoint)
    command = [sys.executable, "-m", "elit", "train", "--config", args.config, "--out", str(run),
               f"train.max_steps={args.steps}", f"train.seed={args.seed}", f"system.precision={precision}",
               "system.threads=1", f"log.log_every={args.log_every}", f"log.ckpt_every={max(args.log_every, args.steps // 4)}",
               "log.progress=false", "log.sample_every=0", *args.overrides]
    print("$ " + " ".join(command[1:]), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def read_log(run: pathlib.Path) -> dict[int, dict]:
    rows = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "step" in record:
            rows[record["step"]] = record
    return rows


def compare(out: pathlib.Path, args) -> dict:
    logs = {p: read_log(out / p) for p in PRECISIONS}
    steps = sorted(s for s in set(logs["fp32"]) & set(logs["bf16"]) if s <= args.steps)
    if not steps:
        sys.exit(f"precision_training: no step logged by both runs in {out}; train them first")
    curve = [{"step": s, "fp32": logs["fp32"][s]["loss"], "bf16": logs["bf16"][s]["loss"]} for s in steps]
    relative = [(r["bf16"] - r["fp32"]) / r["fp32"] for r in curve]
    tail = relative[-max(1, len(relative) // 5):]
    speed = {p: sum(logs[p][s]["images_per_s"] for s in steps) / len(steps) for p in PRECISIONS}
    batch = yaml.safe_load((out / "fp32" / "config.yaml").read_text())["train"]["global_batch_size"]
    return {"config": args.config, "steps": steps[-1], "seed": args.seed, "log_every": args.log_every,
            "curve": curve, "mean_relative_difference": sum(relative) / len(relative),
            "last_fifth_relative_difference": sum(tail) / len(tail),
            "images_per_s": speed, "seconds_per_step": {p: batch / v for p, v in speed.items()}, "batch": batch}


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for p, style in zip(PRECISIONS, ("-", "--")):
        ax.plot([r["step"] for r in result["curve"]], [r[p] for r in result["curve"]], style, label=p)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (mean of the {result['log_every']} steps before)")
    ax.set_title(f"{result['config']}, seed {result['seed']}: fp32 vs bf16 autocast")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, required=True, help="folder of the two runs (fp32/, bf16/)")
    ap.add_argument("--config", default="study-fmnist-elit-mb")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--only", choices=PRECISIONS, help="train only this one (two processes: one per core)")
    ap.add_argument("--smoke", action="store_true", help="10 steps of batch 16 each, logged every 5 (CI)")
    ap.add_argument("--json", type=pathlib.Path, help="write the comparison as this docs JSON entry")
    ap.add_argument("--key", default="precision-training")
    ap.add_argument("--plot", type=pathlib.Path, help="write the two loss curves as a PNG")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    args.overrides = []
    if args.smoke:
        args.steps, args.log_every = 10, 5
        args.overrides = ["train.global_batch_size=16"]
    for precision in ([args.only] if args.only else PRECISIONS):
        train(args.out, precision, args)
    if args.only:
        return
    result = compare(args.out, args)
    for r in result["curve"]:
        print(f"step {r['step']:>5}: fp32 {r['fp32']:.4f}  bf16 {r['bf16']:.4f}  ({(r['bf16'] - r['fp32']) / r['fp32']:+.2%})")
    print(f"mean relative difference {result['mean_relative_difference']:+.2%}, over the last fifth "
          f"{result['last_fifth_relative_difference']:+.2%}; seconds per step: "
          + ", ".join(f"{p} {s:.2f}" for p, s in result["seconds_per_step"].items()))
    if args.plot:
        plot(result, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        sys.path.insert(0, str(ROOT / "scripts"))
        import docs_tables     # the generator owns the docs JSON's layout
        from elit._precision import native_bf16
        source = docs_tables.measured_source(load_before, threads=1)
        source["cpu_bf16"] = "CPU bf16: " + (native_bf16("cpu") or "none (emulated)")
        source["load"] = ("each run on one thread; the load average above is the comparison's, not the "
                          "trainings' (they may have run beside other work: compare the losses, not the seconds)")
        docs_tables.write_entry(args.json, dict(result, source=source), args.key)
        print(f"figures: {args.json} [{args.key}]")


if __name__ == "__main__":
    main()
