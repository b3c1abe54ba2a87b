"""How many CPU threads to give torch, and how to notice when throughput collapses.

torch's default is one thread per core. On a machine whose cores are busy with other work, its
worker threads wait for each other at every parallel region while the scheduler runs someone else:
on a loaded 2-core machine the main job ran 20x slower with two threads than with one. So the
default ("auto") takes the cores that are free now: the CPU time the machine spent idle over a short
window (/proc/stat), within the cores this process may use (affinity and a cgroup CPU quota). The
1-minute load average is not used: right after a command ends it still counts that command's work,
and a quiet machine looked half busy.

An explicit count always wins: `--threads N` on a command, ELIT_THREADS, or OMP_NUM_THREADS (in that
order; system.threads in training configs). A fixed count is also the deterministic mode: the
thread count changes how sums are split, so sampling and resuming are bit-identical across runs
only with the same count (docs/training.md, docs/sampling.md).
"""
from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, int(quota))) if quota else cores


def cgroup_quota() -> float | None:
    """The CPU quota in cores (cgroup v2 cpu.max, v1 cfs files), None when unlimited or unknown."""
    try:
        text = open("/sys/fs/cgroup/cpu.max").read().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs since boot, or None off Linux."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)     # idle + iowait
    return idle, sum(fields[:8])


def busy_cores(window: float = 0.25) -> float | None:
    """Cores' worth of work running on the machine now: the share of CPU time not idle over
    `window` seconds, times the machine's CPUs. None where /proc/stat cannot be read."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(window)
    second = _cpu_times()
    total = second[1] - first[1]
    if total <= 0:
        return None
    return (1 - (second[0] - first[0]) / total) * (os.cpu_count() or 1)


def choose_threads(cores: int, busy: float, processes: int = 1) -> int:
    """Threads per process: the usable cores other work (`busy` cores of it) leaves free, shared
    among this job's processes on the machine; at least one."""
    free = max(1, round(cores - busy))
    return max(1, min(cores, free) // max(1, processes))


def auto_threads(processes: int = 1) -> tuple[int, str]:
    """(threads, reason) for this machine now."""
    cores = usable_cores()
    busy = busy_cores()
    if busy is None:       # no /proc/stat: the load average is all there is
        try:
            busy, how = os.getloadavg()[0], "load average"
        except (AttributeError, OSError):
            busy, how = 0.0, "load unknown"
    else:
        how = "busy now"
    n = choose_threads(cores, busy, processes)
    reason = f"{cores} usable cores, {busy:.1f} {how}" + (f", {processes} processes" if processes > 1 else "")
    return n, reason


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The count set_thread_environment put in OMP_NUM_THREADS (elit's automatic choice, not the user's).
AUTO_SET: int | None = None


def user_thread_count() -> int | None:
    """The count the user chose: ELIT_THREADS, else OMP_NUM_THREADS; None if neither is set (or
    OMP_NUM_THREADS holds elit's own automatic choice)."""
    text = os.environ.get("ELIT_THREADS", "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            pass
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text or (AUTO_SET is not None and text == str(AUTO_SET)):
        return None
    try:
        return max(1, int(text))
    except ValueError:
        return None


def set_thread_environment(requested: int | None = None, announce=None, option: str = "--threads N") -> int:
    """Before torch and numpy are imported: give torch and the BLAS under numpy/scipy (OpenBLAS,
    MKL) one count, since both spin the same way on a busy machine (a 2048-d matrix square root for
    FID took 40 s with two BLAS threads there, 17 s with one). The count is `requested` (a command's
    --threads, or train's system.threads: `option` names it), else ELIT_THREADS, else OMP_NUM_THREADS,
    else the automatic one; `announce` is told which, once. Returns it."""
    global AUTO_SET
    if requested is not None and requested > 0:
        n, how = requested, option.split()[0].removesuffix("=N")
    elif os.environ.get("ELIT_THREADS", "").strip() and user_thread_count():
        n, how = user_thread_count(), "ELIT_THREADS"
    elif user_thread_count():
        n, how = user_thread_count(), "OMP_NUM_THREADS"
    else:
        n, reason = auto_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, str(n))
        AUTO_SET = n
        if announce is not None:
            announce(f"using {n} CPU thread{'s' * (n > 1)} (automatic: {reason}); {option} or "
                     f"ELIT_THREADS=N chooses, and a fixed count makes results bit-identical run to run")
        return n
    for name in THREAD_VARIABLES:       # the user's count, for torch and the BLAS alike
        os.environ[name] = str(n)
    os.environ["ELIT_THREADS"] = str(n)
    AUTO_SET = None
    if announce is not None:
        announce(f"using {n} CPU thread{'s' * (n > 1)} ({how})")
    return n


def set_threads(requested: int = 0, processes: int = 1, announce=None) -> int:
    """Set torch's thread count: `requested` if > 0; else OMP_NUM_THREADS if set; else auto.
    `announce(text)` is told when auto chose fewer threads than cores."""
    import torch
    if requested > 0:
        n = requested
    elif os.environ.get("ELIT_THREADS", "").strip() and user_thread_count():
        n = user_thread_count()            # torch does not read ELIT_THREADS itself
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
