"""How many CPU threads to give torch, and how to notice when throughput collapses.

torch's default is one thread per core. On a machine whose cores are busy with other work, its
worker threads wait for each other at every parallel region while the scheduler runs someone else:
on a loaded 2-core machine the main job ran 20x slower with two threads than with one. So the
default ("auto") takes the cores that the load average says are free, never more than torch would.
An explicit count (system.threads, OMP_NUM_THREADS) is always obeyed.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(cores: int, load: float, processes: int = 1) -> int:
    """Threads per process: the cores the other work (its 1-minute load average) leaves free,
    shared among this job's processes on the machine; at least one."""
    free = max(1, round(cores - load))
    return max(1, min(cores, free) // max(1, processes))


def auto_threads(processes: int = 1) -> tuple[int, str]:
    """(threads, reason) for this machine now."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    n = choose_threads(cores, load, processes)
    reason = f"{cores} cores, load average {load:.1f}" + (f", {processes} processes" if processes > 1 else "")
    return n, reason


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The count set_thread_environment put in OMP_NUM_THREADS (elit's automatic choice, not the user's).
AUTO_SET: int | None = None


def user_thread_count() -> int | None:
    """OMP_NUM_THREADS if the user set it; None if it is unset or elit's own automatic choice."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text or (AUTO_SET is not None and text == str(AUTO_SET)):
        return None
    try:
        return max(1, int(text))
    except ValueError:
        return None


def set_thread_environment(announce=None) -> int | None:
    """Before torch and numpy are imported: unless the user set OMP_NUM_THREADS, give torch and the
    BLAS under numpy/scipy (OpenBLAS, MKL) the auto count. Both spin the same way on a busy machine
    (a 2048-d matrix square root for FID took 40 s with two BLAS threads there, 17 s with one).
    Returns the count set, or None if the user's choice was kept."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    global AUTO_SET
    n, reason = auto_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(n))
    AUTO_SET = n
    if announce is not None and n < usable_cores():
        announce(f"using {n} CPU thread{'s' * (n > 1)} ({reason}; other work holds the rest); "
                 f"set OMP_NUM_THREADS to choose")
    return n


def set_threads(requested: int = 0, processes: int = 1, announce=None) -> int:
    """Set torch's thread count: `requested` if > 0; else OMP_NUM_THREADS if set; else auto.
    `announce(text)` is told when auto chose fewer threads than cores."""
    import torch
    if requested > 0:
        n = requested
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    else:
        n, reason = auto_threads(processes)
        if announce is not None and n < usable_cores():
            announce(f"using {n} CPU thread{'s' * (n > 1)} ({reason}; other work holds the rest); "
                     f"set the thread count explicitly to override")
    torch.set_num_threads(n)
    return n


def set_run_threads(requested: int, recorded: int | None, processes: int = 1, announce=None) -> int:
    """`set_threads` for a run that may be resumed. On a CPU the thread count changes how sums are
    split, so a run continued with another count ends a few ulps away from an uninterrupted one.
    `recorded` (the count its last checkpoint was written with) is therefore kept when the count is
    automatic, and a count the user chose that differs from it is announced."""
    import torch
    chosen = requested if requested > 0 else user_thread_count()
    if chosen is None and recorded:
        auto, reason = auto_threads(processes)
        if auto != recorded and announce is not None:
            announce(f"resuming with {recorded} CPU thread{'s' * (recorded > 1)}, the count this run was trained "
                     f"with (the automatic count is {auto} now: {reason}); system.threads={auto} would be faster "
                     f"but changes the result in the last bits")
        torch.set_num_threads(recorded)
        return recorded
    n = set_threads(requested, processes, announce)
    if recorded and n != recorded and announce is not None:
        announce(f"this run was trained with {recorded} CPU thread{'s' * (recorded > 1)} so far and goes on with "
                 f"{n}: its weights will differ in the last bits from an uninterrupted run "
                 f"(system.threads={recorded} keeps them identical)")
    return n


class ThroughputWatch:
    """Flags a throughput that fell far below the best seen in this run (a machine that became
    busy, or threads fighting over cores), so the progress bar can say so."""

    def __init__(self, factor: float = 4.0, warmup: int = 1):
        self.factor, self.warmup = factor, warmup
        self.best, self.seen = 0.0, 0

    def update(self, rate: float) -> str | None:
        """Record one measurement; a short warning if it is `factor` x below the best so far."""
        self.seen += 1
        slow = self.seen > self.warmup and self.best > 0 and rate * self.factor < self.best
        self.best = max(self.best, rate)
        if slow:
            return f"{self.best / max(rate, 1e-9):.0f}x below this run's best: machine busy? try fewer threads"
        return None
