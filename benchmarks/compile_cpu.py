"""torch.compile on CPU: compile time and forward time per budget, eager vs compiled, in one run.

    python benchmarks/compile_cpu.py [--model ELIT-DiT-S/2] [--batch 8] [--modes eager,blocks,model]
    python benchmarks/compile_cpu.py --run runs/elit-mb        # a trained run folder (its EMA model)
    python benchmarks/compile_cpu.py --model ELIT-DiT-S/2 --batch 4 --json docs/performance.json --key compile-cpu

Modes: "eager"; "blocks" = elit.compile_blocks (the repeated blocks, Read and Write, with a
dynamic sequence length: one set of graphs serves every budget); "model" = torch.compile of the
whole forward (a static graph for the first budget, then one with a symbolic budget); "static" =
torch.compile(model, dynamic=False): a static graph per budget (up to torch's recompile limit, 8). For each mode it prints the
time of the first pass over all budgets (compiling included), the median forward time per budget
after that, the number of graphs dynamo compiled, and the largest difference from eager. Run it on
a quiet machine: read the ratios, not the seconds. With --json PATH the figures are also written as
the entry scripts/docs_tables.py renders docs/performance.md's compile table from; with --key NAME
they replace that entry of the docs JSON at PATH (then run scripts/docs_tables.py).
"""
import argparse
import copy
import os
import pathlib
import statistics
import sys
import time

import torch
import torch._dynamo

import elit


def load(args):
    if args.run:
        from elit.hub import load_pretrained
        return load_pretrained(os.path.join(args.run, "model")).eval()
    torch.manual_seed(0)
    model = elit.create_model(args.model, input_size=args.input_size, num_classes=10).eval()
    with torch.no_grad():   # a fresh model's zero-init output layers would hide any difference
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def graph_count() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def mode_entry(mode: str, first: float, graphs: int, diff: float, seconds: dict, eager: dict | None) -> dict:
    """One mode's figures as docs/performance.json holds them; ratios need an eager pass to compare with."""
    budgets = list(seconds)
    entry = {"mode": mode, "first_pass_s": first, "graphs": graphs,
             "max_abs_diff": None if diff != diff else diff,      # NaN (no eager pass to compare with) is not JSON
             "seconds": [seconds[b] for b in budgets], "ratio_min": None, "ratio_max": None}
    if eager:
        ratios = {b: seconds[b] / eager[b] for b in budgets}
        lo, hi = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
        entry.update(ratio_min=ratios[lo], ratio_min_budget=lo, ratio_max=ratios[hi], ratio_max_budget=hi)
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ELIT-DiT-S/2")
    ap.add_argument("--run", help="a trained run folder (uses RUN/model) instead of a preset")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="eager,blocks,model")
    ap.add_argument("--budgets", help="comma-separated; default: every budget of the model")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as a docs JSON entry "
                                                   "(what scripts/docs_tables.py renders)")
    ap.add_argument("--key", help="with --json: store the entry under this key of PATH, its other entries kept")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    base = load(args)
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else list(base.budgets)
    size = args.input_size if not args.run else base.config.backbone.input_size
    x = torch.randn(args.batch, base.config.backbone.in_channels, size, size)
    t = torch.rand(args.batch)
    y = torch.randint(0, base.num_classes, (args.batch,))
    print(f"{args.run or args.model}, input {size}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"load average {load_before:.1f}, budgets {budgets}, median of {args.repeats}")
    reference, results, entries = {}, {}, []
    for mode in args.modes.split(","):
        model = copy.deepcopy(base)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        if mode == "blocks":
            elit.compile_blocks(model)
        elif mode == "model":
            model = torch.compile(model)
        elif mode == "static":
            model = torch.compile(model, dynamic=False)
        elif mode != "eager":
            raise SystemExit(f"unknown mode {mode!r}: choose from eager, blocks, model, static")
        with torch.inference_mode():
            start = time.perf_counter()
            outs = {b: model(x, t, y, budget=b) for b in budgets}
            first = time.perf_counter() - start
            times = {b: [] for b in budgets}
            for _ in range(args.repeats):     # interleaved, so load changes hit every budget alike
                for b in budgets:
                    start = time.perf_counter()
                    model(x, t, y, budget=b)
                    times[b].append(time.perf_counter() - start)
        if mode == "eager":
            reference = outs
        diff = max((outs[b] - reference[b]).abs().max().item() for b in budgets) if reference else float("nan")
        results[mode] = {b: statistics.median(v) for b, v in times.items()}
        entries.append(mode_entry(mode, first, graph_count(), diff, results[mode], results.get("eager")))
        print(f"[{mode}] first pass over all budgets {first:.1f} s, {graph_count()} graphs compiled, "
              f"max |out - eager| {diff:.2e}", flush=True)
    modes = list(results)
    print(f"\n{'budget':>6} " + " ".join(f"{m + ' (s)':>12}" for m in modes)
          + "".join(f" {m + '/eager':>13}" for m in modes if m != "eager"))
    for b in budgets:
        row = f"{b:>6} " + " ".join(f"{results[m][b]:>12.4f}" for m in modes)
        if "eager" in results:
            row += "".join(f" {results[m][b] / results['eager'][b]:>13.3f}" for m in modes if m != "eager")
        print(row)
    if args.json:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
        import docs_tables     # the generator owns the docs JSON's layout
        entry = {"source": docs_tables.measured_source(load_before), "model": args.run or args.model,
                 "input_size": size, "batch": args.batch, "repeats": args.repeats, "budgets": budgets, "modes": entries}
        docs_tables.write_entry(args.json, entry, args.key)
        print(f"figures: {args.json}" + (f" [{args.key}]" if args.key else ""))


if __name__ == "__main__":
    main()
