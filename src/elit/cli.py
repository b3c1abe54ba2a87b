"""The `elit` command line: one subcommand per module, imported only when used.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
User errors (ValueError, FileNotFoundError) are printed as one line without a traceback
and exit with status 2; everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "flops": ("elit.flops", "GFLOPs per forward (and per sampling run) at each budget"),
    "train": ("elit.train.cli", "train a model from a YAML config (resumable; torchrun-aware)"),
    "sample": ("elit.sampling_cli", "sample a trained model at any budget with optional guidance"),
    "plan": ("elit.planner", "choose steps/budget/guidance for a target cost"),
    "extract-latents": ("elit.data.extract", "encode an image folder to VAE latent shards"),
    "ref": ("elit.metrics.cli", "compute reference feature statistics (.npz)"),
    "fid": ("elit.metrics.cli", "FID between two image folders or .npz files"),
    "eval": ("elit.evaluate", "budget sweep: generate and measure quality vs GFLOPs"),
    "train-classifier": ("elit.metrics.cli", "train the Fashion-MNIST feature classifier (domain metric)"),
    "convert": ("elit.convert", "convert reference checkpoints (authors' ELIT-SiT, SiT, DiT)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elit", description="Elastic-budget diffusion transformers (ELIT).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"elit: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("elit"):
            print(f"elit {name}: not available in this build ({e})", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"elit {name}", description=help_text)
    # Modules serving several commands get the command name to pick their arguments.
    if getattr(module, "MULTI_COMMAND", False):
        module.add_arguments(parser, name)
    else:
        module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.command = name
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"elit {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
