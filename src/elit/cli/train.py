"""`elit train --config NAME_OR_FILE --out DIR [--max-steps N] [section.key=value ...]`.

Rerunning the same command with the same --out resumes from the newest checkpoint in DIR.
Under `torchrun --nproc_per_node=K -m elit train ...` it trains with DDP (or FSDP2 with
system.parallel=fsdp); train.global_batch_size is the batch over all processes.
"""
from __future__ import annotations

import argparse
import sys

HELP = "train a model from a YAML config (resumable; torchrun-aware)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from elit.train.config import list_presets
    parser.add_argument("--config", default="fmnist-elit-dit",
                        help=f"built-in preset ({', '.join(list_presets())}) or a YAML file; default fmnist-elit-dit")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, samples/, model/")
    add_shorthand_flags(parser)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config keys, e.g. model.hidden_size=256 train.lr=2e-4")


def add_shorthand_flags(parser: argparse.ArgumentParser) -> None:
    """The flags elit train and elit finetune share: shorthands for config keys, and --print-config."""
    parser.add_argument("--max-steps", type=int, default=None, help="shorthand for train.max_steps=N")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="shorthand for system.precision (default auto: bf16 autocast on a GPU that has it, "
                             "fp32 on a CPU)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def shorthand_overrides(args: argparse.Namespace) -> dict:
    """What add_shorthand_flags' flags set, for flag_overrides."""
    return {"--max-steps": ("train.max_steps", args.max_steps), "--precision": ("system.precision", args.precision)}


def run(args: argparse.Namespace) -> int:
    from elit.train.config import load_config
    from elit.train.config import flag_overrides
    overrides = flag_overrides(args.overrides, shorthand_overrides(args),
                               announce=lambda text: print(f"elit train: {text}", file=sys.stderr))
    cfg = load_config(args.config, overrides)
    if args.print_config:
        from elit.train.config import dump_config
        print(dump_config(cfg), end="")
        return 0
    from elit.train.trainer import train  # heavy imports only when training
    result = train(cfg, args.out)
    if result.get("stopped"):   # SIGTERM / SIGINT: checkpointed, unfinished
        from elit.train.stop import exit_status
        return exit_status(result["stopped"])
    if result.get("is_main", True):
        print(f"elit train: {result['step']} steps done; EMA model in {result['model']}"
              + (f"; samples in {result['grid']}" if result.get("grid") else ""))
    return 0
