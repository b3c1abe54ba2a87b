"""The `elit` command line: one module per subcommand, each written the same way and imported only
when its command runs (so `elit --help` starts in a blink).

A subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
A `UserError` (bad input the user can fix) is printed as one line and exits with status 2;
anything else is a bug and keeps its traceback (status 1).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> module in elit.cli; one-line help (kept here so `elit --help` imports nothing)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model from a YAML config (resumable; torchrun-aware)"),
    "finetune": ("finetune", "fine-tune a pretrained model (diffusers Qwen-Image / SD3 / FLUX / Wan, converted DiT / U-ViT) "
                             "into ELIT"),
    "sample": ("sample", "sample a trained model at any budget with optional guidance"),
    "flops": ("flops", "GFLOPs per forward (and per sampling run) at each budget"),
    "plan": ("plan", "choose steps/budget/guidance for a target cost"),
    "eval": ("eval", "budget sweep: generate and measure quality vs GFLOPs"),
    "ref": ("ref", "compute reference feature statistics (.npz)"),
    "fid": ("fid", "FID (or FDD, FD-FMNIST) between two image folders or .npz files"),
    "serve": ("serve", "serve a model over HTTP: per-request and deadline-aware budgets, web page, metrics"),
    "convert": ("convert", "convert reference checkpoints (authors' ELIT-SiT, SiT, DiT, U-ViT)"),
    "extract-latents": ("extract_latents", "encode an image folder to VAE latent shards"),
    "train-classifier": ("train_classifier", "train the Fashion-MNIST feature classifier (domain metric)"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (as every other user error), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="elit", description="Elastic-budget diffusion transformers (ELIT).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# Commands whose speed on a busy CPU depends on the thread count (`elit train`'s system.threads, when
# set, overrides the automatic count for torch).
THREADED = ("train", "sample", "eval", "fid", "ref", "plan", "extract-latents")


def _thread_count(value: str) -> int | None:
    """N > 0, else None: a bad value is named later, by the parser or the config check."""
    value = value.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def threads_flag(args: list[str]) -> int | None:
    """A threaded command's --threads N, read before torch is imported (its parser checks it again)."""
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            args[i + 1] if arg == "--threads" and i + 1 < len(args) else None)
        if value is not None:
            return _thread_count(value)
    return None


def threads_override(args: list[str]) -> int | None:
    """`elit train`'s system.threads=N on the command line, read before torch is imported, so the
    BLAS gets the same count as torch."""
    for arg in args:
        if arg.startswith("system.threads="):
            return _thread_count(arg.split("=", 1)[1])
    return None


def add_threads_argument(parser) -> None:
    """--threads, the same on every threaded command (elit._threads says how the default is chosen)."""
    from elit.cli._args import integer
    parser.add_argument("--threads", type=integer(1), default=None,
                        help="CPU threads for torch and the BLAS (default: ELIT_THREADS, OMP_NUM_THREADS, else the "
                             "cores free now); a fixed count gives bit-identical results run to run")


def add_precision_argument(parser) -> None:
    """--precision, the same on every command that runs a model (elit._precision says how auto chooses)."""
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="the model passes' arithmetic: bf16 autocast or fp32 (default auto: bf16 where the "
                             "hardware has it natively and a timed pass of this model is >= 1.1x faster; fp32 "
                             "elsewhere); the sampler integrates in fp32 either way")


def main(argv: list[str] | None = None) -> int:
    # Only a real command line picks the thread count: a library call (tests, notebooks) keeps its own.
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    if argv[0] == "--version":
        from elit import __version__
        print(f"elit {__version__} (distribution elit-diffusion)")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"elit: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    if from_command_line and name in THREADED and not set(argv[1:]) & {"-h", "--help"}:
        from elit._threads import set_thread_environment   # before torch or numpy is imported
        train = name == "train"   # train has no --threads: its count is the config's system.threads
        set_thread_environment(threads_override(argv[1:]) if train else threads_flag(argv[1:]),
                               option="system.threads=N" if train else "--threads N",
                               announce=lambda text: print(f"elit {name}: {text}", file=sys.stderr))
    module = importlib.import_module(f"elit.cli.{module_name}")
    parser = OneLineParser(prog=f"elit {name}", description=module.__doc__.split("\n\n")[0].strip()
                           if module.__doc__ else help_text)
    module.add_arguments(parser)
    if name in THREADED and name != "train":   # train: system.threads (its own rules on resume)
        add_threads_argument(parser)
    try:
        # Intermixed: `elit train ... train.lr=1e-3 --max-steps 2 model.depth=3` is one command line.
        args = parser.parse_intermixed_args(argv[1:])
    except SystemExit as e:   # --help (0) or a usage error (2, already printed): a status, not an exit
        return int(e.code or 0)
    args.command = name
    from elit.errors import UserError
    try:
        return int(module.run(args) or 0)
    except UserError as e:   # one line, whatever the message holds (a YAML error quotes the file)
        print(f"elit {name}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"elit {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
