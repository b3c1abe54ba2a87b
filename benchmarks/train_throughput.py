"""Training throughput (images/s) of ELIT-DiT vs DiT of the same width and depth, side by side.

    python benchmarks/train_throughput.py [--config fmnist-elit-dit] [--baseline fmnist-dit] [--steps 20]

Each variant runs the real training step (elit.train.Trainer: flow loss, backward, clip, AdamW, EMA)
on real data. Steps are interleaved round-robin across the variants, so load from other processes
hits all of them alike. Variants: the multi-budget ELIT model as it trains (J~ ~ Uniform{1..J}),
the same model pinned at the full budget, and the plain DiT baseline.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from elit.cost import analytic_gflops
from elit.train import distributed as D
from elit.train.config import load_config
from elit.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="fmnist-elit-dit")
    parser.add_argument("--baseline", default="fmnist-dit")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense TFLOPs at the training precision (e.g. 989 for an H100 "
                             "SXM in bf16): adds model FLOPs utilisation (MFU)")
    parser.add_argument("overrides", nargs="*", help="section.key=value applied to every variant")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = D.init_distributed("auto")
    variants = {"ELIT-DiT multi-budget": (args.config, []),
                "ELIT-DiT full budget": (args.config, ["train.budget=full"]),
                "DiT (baseline)": (args.baseline, ["train.budget=full", "log.sample_budgets=null"])}
    trainers, batches, times = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, extra) in variants.items():
            cfg = load_config(config, [*args.overrides, *extra])
            trainers[name] = Trainer(cfg, tmp, env)
            batches[name] = iter(trainers[name].loader)
            times[name] = 0.0
        for i in range(args.warmup + args.steps):
            for name, tr in trainers.items():
                x, y = next(batches[name])
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                tr.train_step(x, y)
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times[name] += time.perf_counter() - start
                tr.step += 1
    threads = torch.get_num_threads()
    print(f"device {env.device}, {threads} threads, {args.steps} timed steps per variant, "
          f"torch {torch.__version__}")
    base = None
    mfu_head = f" {'train TFLOP/s':>13} {'MFU':>6}" if args.peak_tflops else ""
    print(f"{'variant':<24} {'batch':>5} {'img/s':>8} {'vs DiT':>7} {'fwd GFLOPs/img':>15}{mfu_head}")
    rows = []
    for name, tr in trainers.items():
        cfg = tr.cfg
        ips = args.steps * cfg.train.global_batch_size / times[name]
        choices = tr.budget_draws.choices
        gflops = sum(analytic_gflops(cfg.model, b) for b in choices) / len(choices)
        rows.append((name, cfg.train.global_batch_size, ips, gflops))
        if name.startswith("DiT"):
            base = ips
    for name, batch, ips, gflops in rows:
        line = f"{name:<24} {batch:>5} {ips:>8.1f} {ips / base:>6.2f}x {gflops:>15.3f}"
        if args.peak_tflops:  # training = forward + backward = 3 x the forward's model FLOPs
            achieved = 3 * gflops * ips / 1e3
            line += f" {achieved:>13.2f} {achieved / args.peak_tflops:>6.1%}"
        print(line)
    print("GFLOPs: analytic, one forward per image, 2 x multiply-adds (multi-budget: mean over the drawn budgets)")


if __name__ == "__main__":
    main()
