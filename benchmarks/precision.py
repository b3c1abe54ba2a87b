"""What bf16 autocast costs and buys, per model size, side by side in one process (issue 28).

    python benchmarks/precision.py                          # S/2, B/2, XL/2 at 256 px, and the width-64 study model
    python benchmarks/precision.py --models ELIT-DiT-B/2 --repeats 5
    python benchmarks/precision.py --threads 1 --json docs/performance.json --key precision   # the doc's table
    python benchmarks/precision.py --quality MODEL_DIR --json docs/performance.json --key precision-sampling

For each model: the relative error of one bf16-autocast forward against fp32 (||bf16 - fp32|| /
||fp32|| over the batch, at the full budget and at budget 1), and the median time of each (interleaved
within every repeat, so the machine's load hits both alike), their ratio, and what `--precision auto`
takes here (elit._precision: bf16 only with native hardware and a ratio >= 1.10). Weights: the
model's own initialisation with every tensor then moved by N(0, 0.02), so the zero-initialised output
layers do not hide the error. Where the CPU has no AVX512-BF16 / AMX the bf16 column is torch's
software path: its time is what auto avoids, not what bf16 hardware gives. --quality samples a
trained Fashion-MNIST model's same seeds with fp32 and with bf16 passes (Euler, full budget,
unguided) and measures FD-FMNIST against the 10,000 test images (FID too with --fid).
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

import torch

import elit
from elit._precision import MIN_SPEEDUP, native_bf16

STUDY = "study-fmnist-elit-mb"     # the width-64 model of the studies (and the main job's size)


def build(name: str, input_size: int):
    torch.manual_seed(0)
    if name == STUDY:
        from elit.model import ELITModel
        from elit.train.config import load_config
        model = ELITModel(load_config(STUDY).model)
    else:
        model = elit.create_model(name, input_size=input_size)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def measure(name: str, batch: int, args) -> dict:
    model = build(name, args.input_size)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, *model.sample_shape(), generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    budgets = [None] + ([model.budgets[0]] if model.budgets else [])
    row = {"model": name, "batch": batch, "width": model.config.backbone.hidden_size}
    times = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        for b in budgets:
            out = {}
            for precision in ("fp32", "bf16"):
                model.compute_precision = precision
                out[precision] = model(x, t, y, budget=b).double()
            key = "full" if b is None else f"budget_{b}"
            row[f"rel_error_{key}"] = float((out["bf16"] - out["fp32"]).norm() / out["fp32"].norm())
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                model.compute_precision = precision
                start = time.perf_counter()
                model(x, t, y)
                times[precision].append(time.perf_counter() - start)
    row["seconds_fp32"], row["seconds_bf16"] = (statistics.median(times[p]) for p in ("fp32", "bf16"))
    row["speedup"] = row["seconds_fp32"] / row["seconds_bf16"]
    row["auto"] = "bf16" if native_bf16("cpu") and row["speedup"] >= MIN_SPEEDUP else "fp32"
    return row


def sampling_quality(model_dir: str, args) -> list[dict]:
    """FD-FMNIST (and FID with --fid) of the same seeds sampled with fp32 and with bf16 passes."""
    from elit.eval.sweep import run_sweep
    rows = []
    for precision in ("fp32", "bf16"):
        model = elit.load_pretrained(model_dir).eval()
        model.compute_precision = precision
        setting = [("m", dict(latents_per_group=model.budgets[-1] if model.budgets else None, guidance="none",
                              scale=0.0, weak_budget=None))]
        metrics = ("fd_fmnist", "fid") if args.fid else ("fd_fmnist",)
        row = run_sweep({"m": model}, setting, num=args.num, steps=args.steps, sampler="euler", metrics=metrics,
                        ref="fmnist-test", batch_size=250, progress=True)[0]
        rows.append({"model": model_dir, "precision": precision, "steps": args.steps, "num_samples": args.num,
                     **{m: row[m] for m in metrics}})
        print(f"{model_dir} {precision}: " + ", ".join(f"{m} {row[m]:.3f}" for m in metrics), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=f"{STUDY},ELIT-DiT-S/2,ELIT-DiT-B/2,ELIT-DiT-XL/2")
    ap.add_argument("--batches", default="64,2,2,2", help="one per model (the study model samples 64 at a time)")
    ap.add_argument("--input-size", type=int, default=32, help="latent size of the ImageNet models (32: 256 px)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as a docs JSON entry")
    ap.add_argument("--key", help="with --json: store the entry under this key of PATH, its other entries kept")
    ap.add_argument("--quality", metavar="MODEL_DIR", help="instead: FD-FMNIST of fp32 vs bf16 sampling of a "
                    "trained Fashion-MNIST model (the same seeds)")
    ap.add_argument("--num", type=int, default=2000, help="with --quality: samples per precision")
    ap.add_argument("--steps", type=int, default=20, help="with --quality: Euler steps")
    ap.add_argument("--fid", action="store_true", help="with --quality: FID too")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        load_before = os.getloadavg()[0]
        rows = sampling_quality(args.quality, args)
        if args.json:
            sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
            import docs_tables
            source = docs_tables.measured_source(load_before, torch.get_num_threads())
            source["cpu_bf16"] = native_bf16("cpu") or "none (emulated)"
            docs_tables.write_entry(args.json, {"source": source, "rows": rows}, args.key)
        return
    names, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    if len(batches) != len(names):
        raise SystemExit(f"--batches needs one batch per model ({len(names)}), got {len(batches)}")
    load_before = os.getloadavg()[0]
    native = native_bf16("cpu")
    print(f"{torch.get_num_threads()} threads, load average {load_before:.2f}; native bf16: {native or 'none (emulated)'}"
          f"; median of {args.repeats}", flush=True)
    print(f"{'model':24} {'batch':>5} {'rel err full':>12} {'rel err b1':>10} {'fp32 s':>8} {'bf16 s':>8} "
          f"{'bf16 speed':>10} {'auto':>5}")
    rows = []
    for name, batch in zip(names, batches):
        r = measure(name, batch, args)
        rows.append(r)
        low = r.get(next((k for k in r if k.startswith("rel_error_budget")), ""), float("nan"))
        print(f"{name:24} {batch:>5} {r['rel_error_full']:>12.2e} {low:>10.2e} {r['seconds_fp32']:>8.3f} "
              f"{r['seconds_bf16']:>8.3f} {r['speedup']:>9.2f}x {r['auto']:>5}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
        import docs_tables     # the generator owns the docs JSON's layout
        source = docs_tables.measured_source(load_before, torch.get_num_threads())
        source["cpu_bf16"] = native or "none (emulated)"
        docs_tables.write_entry(args.json, {"source": source, "input_size": args.input_size, "repeats": args.repeats,
                                            "min_speedup": MIN_SPEEDUP, "rows": rows}, args.key)
        print(f"figures: {args.json}" + (f" [{args.key}]" if args.key else ""))


if __name__ == "__main__":
    main()
