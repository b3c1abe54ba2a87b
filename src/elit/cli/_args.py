"""Argument types and checks the subcommands share: counts that must be positive, finite numbers,
devices that exist, output paths of the right kind. Each failure names the problem and the fix."""
from __future__ import annotations

import argparse
import math
import pathlib

from elit.errors import UserError


def integer(low: int = 1, why: str = "", high: int | None = None):
    """An argparse type: an int >= low (so a count can never be negative or zero and used as a slice),
    and <= high when given."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}{f' ({why})' if why else ''}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}{f' ({why})' if why else ''}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def number(low: float | None = None, above: float | None = None):
    """An argparse type: a finite float, >= low or > above when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


def resolve_device(text: str | None, flag: str = "--device"):
    """'auto'/None -> cuda if available, else cpu; anything else must name a device torch has here."""
    import torch
    if text in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {text!r} is not a device; use cpu or cuda (cuda:N for GPU N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {text} but CUDA is not available in this torch build or machine; use {flag} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {text}: there are only {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError(f"{flag} mps but MPS is not available here; use {flag} cpu")
    elif device.type != "cpu":
        raise UserError(f"{flag} {text}: elit runs on cpu, cuda or mps")
    return device


def output_file(path, flag: str = "--out", suffix: str | None = None) -> pathlib.Path:
    """An output that is a file: not an existing folder, and with the suffix readers expect."""
    from elit._output import check_kind
    path = pathlib.Path(path)
    check_kind(path, "file", flag, suffix)
    return path


def output_folder(path, flag: str = "--out") -> pathlib.Path:
    from elit._output import check_kind
    path = pathlib.Path(path)
    check_kind(path, "folder", flag)
    return path
