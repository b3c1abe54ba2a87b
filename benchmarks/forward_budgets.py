"""Forward time vs FLOPs per budget, side by side in one run (paper Fig. 11: time tracks FLOPs).

    python benchmarks/forward_budgets.py                                  # S/2, B/2, XL/2 at batch 4 and 8
    python benchmarks/forward_budgets.py --models ELIT-DiT-B/2 --batches 8 --repeats 5
    python benchmarks/forward_budgets.py --compile                        # with elit.compile_blocks
    python benchmarks/forward_budgets.py --precision bf16                 # under bf16 autocast
    python benchmarks/forward_budgets.py --json docs/performance.json --key forward-budgets   # and the doc's table

For each model and batch it prints, per budget, the median wall time of a no-grad forward, its ratio
to the full budget, the FLOP ratio, and their quotient (time ratio / FLOP ratio: 1.00 means time
follows FLOPs exactly; the target is <= 1.10). Budgets are interleaved within each repeat, so a
change in the machine's load hits all of them alike. The load average is printed before and after:
on a shared CPU read the ratios, not the seconds, and retake a table whose load was high.
With --json PATH the figures are also written as the entry scripts/docs_tables.py renders the table of
docs/performance.md from; with --key NAME they replace that entry of the docs JSON at PATH (then run
scripts/docs_tables.py to regenerate the doc).
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

import torch

import elit
from elit.cost import analytic_gflops

TARGET = 1.10


def measure(name: str, batch: int, args) -> list[tuple]:
    torch.manual_seed(0)
    model = elit.create_model(name, input_size=args.input_size).eval()
    model.compute_precision = args.precision      # bf16: every pass under bf16 autocast, as --precision bf16 runs it
    if args.compile:
        elit.compile_blocks(model)     # compiled during the warm-up below, one set of graphs for all budgets
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else \
        [b for b in (1, 2, 4, 8, 16) if b in model.budgets]
    full = model.budgets[-1]
    if full not in budgets:
        budgets.append(full)
    x = torch.randn(batch, model.config.backbone.in_channels, args.input_size, args.input_size)
    t = torch.rand(batch)
    y = torch.randint(0, model.num_classes, (batch,))
    times = {b: [] for b in budgets}
    with torch.inference_mode():
        for b in budgets:
            model(x, t, y, budget=b)  # warm-up
        for _ in range(args.repeats):
            for b in budgets:
                start = time.perf_counter()
                model(x, t, y, budget=b)
                times[b].append(time.perf_counter() - start)
    t_full = statistics.median(times[full])
    f_full = analytic_gflops(model.config, full, args.input_size)
    rows = []
    for b in budgets:
        f = analytic_gflops(model.config, b, args.input_size)
        tm = statistics.median(times[b])
        rows.append((b, f, f / f_full, tm, tm / t_full, (tm / t_full) / (f / f_full)))
    return rows


def doc_entry(results: list[tuple[str, int, list[tuple]]], args, source: dict) -> dict:
    """The docs JSON entry (scripts/docs_tables.py `forward_budgets` reads it) of (model, batch, rows) results."""
    keys = ("budget", "gflops", "flop_ratio", "seconds", "time_ratio", "time_per_flop")
    return {"source": source, "compile": args.compile, "precision": args.precision, "input_size": args.input_size,
            "repeats": args.repeats,
            "target": TARGET, "results": [{"model": name, "batch": batch, "rows": [dict(zip(keys, r)) for r in rows]}
                                          for name, batch, rows in results]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ELIT-DiT-S/2,ELIT-DiT-B/2,ELIT-DiT-XL/2")
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budgets", default=None, help="comma-separated; default 1,2,4,8,16")
    ap.add_argument("--compile", action="store_true", help="time with elit.compile_blocks (inductor)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="the model's compute precision (bf16: autocast; on a CPU without AVX512-BF16 / AMX it is "
                         "emulated, so its seconds say little, but the ratios still show whether time follows FLOPs)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as a docs JSON entry "
                                                   "(what scripts/docs_tables.py renders)")
    ap.add_argument("--key", help="with --json: store the entry under this key of PATH, its other entries kept")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    print(f"{'compiled blocks' if args.compile else 'eager'}, {args.precision}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"cores, load average {load_before:.2f} before; median of {args.repeats}; FLOPs = 2 x MACs per image", flush=True)
    worst, results = [], []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rows = measure(name, batch, args)
            results.append((name, batch, rows))
            print(f"\n{name}, input {args.input_size}, batch {batch} (load average {os.getloadavg()[0]:.2f})")
            print(f"{'latents/group':>13} {'GFLOPs':>8} {'FLOP ratio':>10} {'time (s)':>9} {'time ratio':>10} "
                  f"{'time/FLOP':>9}")
            for b, f, fr, tm, tr, q in rows:
                print(f"{b:>13} {f:>8.2f} {fr:>10.3f} {tm:>9.3f} {tr:>10.3f} {q:>9.2f}", flush=True)
            worst.append((max(r[5] for r in rows), name, batch))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    for q, name, batch in worst:
        print(f"{name} batch {batch}: worst time/FLOP ratio {q:.2f} -> {'PASS' if q <= TARGET else 'MISS'} "
              f"(target <= {TARGET:.2f})")
    if args.json:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
        import docs_tables     # the generator owns the docs JSON's layout
        docs_tables.write_entry(args.json, doc_entry(results, args, docs_tables.measured_source(load_before)), args.key)
        print(f"figures: {args.json}" + (f" [{args.key}]" if args.key else ""))


if __name__ == "__main__":
    main()
