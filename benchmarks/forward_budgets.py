"""Forward time vs FLOPs per budget, side by side in one run (paper Fig. 11: time tracks FLOPs).

    python benchmarks/forward_budgets.py [--model ELIT-DiT-B/2] [--batch 8] [--repeats 5]

Prints, per budget, the median wall time of a no-grad forward and its ratio to the full budget,
next to the FLOP ratio. Timings on a shared CPU are noisy: read the ratios, not the seconds.
"""
import argparse
import statistics
import time

import torch

import elit
from elit.cost import analytic_gflops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ELIT-DiT-B/2")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budgets", default=None, help="comma-separated; default 1,2,4,8,16")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = elit.create_model(args.model, input_size=args.input_size).eval()
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else [b for b in (1, 2, 4, 8, 16) if b in model.budgets]
    full = model.budgets[-1]
    if full not in budgets:
        budgets.append(full)
    x = torch.randn(args.batch, model.config.backbone.in_channels, args.input_size, args.input_size)
    t = torch.rand(args.batch)
    y = torch.randint(0, model.num_classes, (args.batch,))
    times = {}
    with torch.inference_mode():
        for b in budgets:
            model(x, t, y, budget=b)  # warm-up
        for _ in range(args.repeats):  # interleave budgets so load changes hit all of them alike
            for b in budgets:
                start = time.perf_counter()
                model(x, t, y, budget=b)
                times.setdefault(b, []).append(time.perf_counter() - start)
    print(f"{args.model}, input {args.input_size}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; FLOPs = 2 x MACs per image")
    print(f"{'latents/group':>13} {'GFLOPs':>8} {'FLOP ratio':>10} {'time (s)':>9} {'time ratio':>10}")
    t_full = statistics.median(times[full])
    f_full = analytic_gflops(model.config, full, args.input_size)
    for b in budgets:
        f = analytic_gflops(model.config, b, args.input_size)
        tm = statistics.median(times[b])
        print(f"{b:>13} {f:>8.2f} {f / f_full:>10.3f} {tm:>9.3f} {tm / t_full:>10.3f}")


if __name__ == "__main__":
    main()
