"""Stopping a training run on request, with a checkpoint: SIGTERM (a cluster scheduler's preemption,
`kill`, torchrun passing on the signal it got) or SIGINT (Ctrl-C) asks the run to stop at the next
step boundary; the trainer writes a checkpoint at that step and the same command resumes from it.

Under torchrun every rank must stop at the same step (the checkpoint is a collective under FSDP),
while the signal reaches the ranks at slightly different moments. So each step the ranks agree on
one flag (an all-reduce of one number): a rank that has seen the signal stops them all. torchrun
kills its workers 30 s after forwarding a signal, which bounds how long the last step and the
checkpoint may take.
"""
from __future__ import annotations

import signal
import threading
import time

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORCE_AFTER_S = 1.0   # a second Ctrl-C this long after the first stops at once (torchrun's own copy comes sooner)


class StopRequest:
    """A context manager that turns SIGTERM / SIGINT into a request (`signal_name`), read once per
    step with `agreed(device)`. Installed only in the main thread (Python delivers signals there;
    elsewhere, e.g. a server's worker thread, the default handling stays). A second SIGINT, well
    after the first, raises KeyboardInterrupt: a user who presses Ctrl-C twice wants out now."""

    def __init__(self):
        self.signum: int | None = None
        self.at = 0.0
        self.previous: dict = {}

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT and time.monotonic() - self.at > FORCE_AFTER_S:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank was asked to stop (a collective under torch.distributed: every rank calls
        it at the same step). The signal number travels too, so every rank can name it."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return self.signum is not None
        flag = torch.tensor([float(self.signum or 0)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())   # one host sync
        if agreed and self.signum is None:
            self.signum = agreed
        return bool(agreed)


def exit_status(signal_name: str) -> int:
    """The shell's status for a process ended by this signal (128 + its number: 143, 130), which a
    stopped run exits with, so a scheduler or a script sees it did not finish."""
    return 128 + signal.Signals[signal_name].value
