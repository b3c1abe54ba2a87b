"""Issue 18 / 19.5: the default thread count follows the cores other work leaves free, an explicit
count wins, and a throughput collapse is flagged (rules only: no timing in unit tests)."""
import os
import subprocess
import sys

import torch

from elit._threads import ThroughputWatch, choose_threads, set_threads


def test_threads_take_the_free_cores():
    assert choose_threads(cores=2, busy=0.0) == 2
    assert choose_threads(cores=2, busy=1.0) == 1         # another job holds one core: one thread
    assert choose_threads(cores=2, busy=5.0) == 1         # never zero
    assert choose_threads(cores=16, busy=3.6) == 12
    assert choose_threads(cores=16, busy=0.0, processes=2) == 8   # torchrun: shared among the local ranks


def test_the_machine_is_read_now_not_from_the_load_average(monkeypatch):
    """busy_cores measures CPU time over a short window (/proc/stat); on a machine whose load
    average still counts a finished command, the count follows what runs now."""
    import elit._threads as T
    busy = T.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    monkeypatch.setattr(T.os, "getloadavg", lambda: (99.0, 99.0, 99.0))   # a stale, huge load average
    monkeypatch.setattr(T, "busy_cores", lambda window=0.25: 0.0)
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    assert T.auto_threads()[0] == 2


def test_a_cgroup_quota_caps_the_usable_cores(monkeypatch):
    import elit._threads as T
    monkeypatch.setattr(T, "cgroup_quota", lambda: 1.5)
    assert T.usable_cores() == 1
    monkeypatch.setattr(T, "cgroup_quota", lambda: None)
    assert T.usable_cores() >= 1


def test_an_explicit_count_wins(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert set_threads(0) == 2                         # OMP_NUM_THREADS set: auto leaves torch alone
    finally:
        torch.set_num_threads(before)


def test_auto_announces_a_cap_on_a_loaded_machine():
    """A real process: with OMP_NUM_THREADS unset, `set_threads(0)` caps at the free cores."""
    code = ("import elit._threads as T, torch\n"
            "T.busy_cores = lambda window=0.25: T.usable_cores() + 5.0\n"
            "n = T.set_threads(0, announce=print)\nprint('threads', n, torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ELIT_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "threads 1 1"
    if os.cpu_count() > 1:
        assert "using 1 CPU thread" in out and "busy now" in out


def test_throughput_collapse_is_flagged():
    watch = ThroughputWatch(factor=4)
    assert watch.update(5.0) is None                        # the first interval only sets the bar
    assert watch.update(40.0) is None
    assert watch.update(35.0) is None
    message = watch.update(2.0)
    assert message and message.startswith("20x below this run's best")
    assert watch.update(30.0) is None


def test_command_lines_give_torch_and_blas_the_auto_count(monkeypatch):
    import elit._threads as T
    monkeypatch.setattr(T, "AUTO_SET", None)
    for name in T.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(T, "busy_cores", lambda window=0.25: T.usable_cores() + 3.0)
    monkeypatch.delenv("ELIT_THREADS", raising=False)
    said = []
    assert T.set_thread_environment(announce=said.append) == 1
    assert all(os.environ[name] == "1" for name in T.THREAD_VARIABLES)
    assert bool(said) == (T.usable_cores() > 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")                 # the user's choice is kept
    assert T.set_thread_environment() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("ELIT_THREADS", "2")                    # ELIT_THREADS wins, and reaches the BLAS too
    said.clear()
    assert T.set_thread_environment(announce=said.append) == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    assert said == ["using 2 CPU threads (ELIT_THREADS)"]
    assert T.set_thread_environment(4) == 4 and os.environ["ELIT_THREADS"] == "4"   # --threads wins over both


def test_a_resumed_run_keeps_its_thread_count_and_says_when_it_changes(monkeypatch):
    """Issue 30: on a CPU the thread count moves the weights in the last bits, so a resume reuses
    the count the run was trained with unless the user chose one, and says so when they differ."""
    import elit._threads as T
    for name in T.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(T, "AUTO_SET", None)
    monkeypatch.setattr(T, "busy_cores", lambda window=0.25: T.usable_cores() + 3.0)
    monkeypatch.delenv("ELIT_THREADS", raising=False)   # auto: 1 thread
    before = torch.get_num_threads()
    try:
        said = []
        assert T.set_run_threads(0, 2, announce=said.append) == 2 and torch.get_num_threads() == 2
        assert said and "resuming with 2 CPU threads, the count this run was trained with" in said[0]
        said.clear()
        assert T.set_run_threads(1, 2, announce=said.append) == 1 and torch.get_num_threads() == 1
        assert "trained with 2 CPU threads so far and goes on with 1" in said[-1]
        said.clear()
        assert T.set_run_threads(1, 1, announce=said.append) == 1 and not said      # the same count: silent
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(T, "AUTO_SET", 1)            # elit's own automatic choice, not the user's
        assert T.set_run_threads(0, 2, announce=said.append) == 2
        monkeypatch.setattr(T, "AUTO_SET", None)         # now the user's: obeyed, and the change is said
        said.clear()
        torch.set_num_threads(1)
        assert T.set_run_threads(0, 2, announce=said.append) == 1 and "goes on with 1" in said[-1]
    finally:
        torch.set_num_threads(before)


def test_train_takes_its_count_from_system_threads_before_torch_loads(tmp_path):
    """`elit train` has no --threads: a system.threads=N override sets torch's and the BLAS's count
    from the start (two trainings side by side with one thread each said "using 2" before), and the
    automatic count's hint names system.threads, the knob train has."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ELIT_THREADS")}
    base = [sys.executable, "-m", "elit", "train", "--config", "no-such-config", "--out", str(tmp_path / "run")]
    said = subprocess.run(base + ["system.threads=1"], env=env, capture_output=True, text=True).stderr
    assert "using 1 CPU thread (system.threads)" in said
    assert "no-such-config" in said                       # the real error still comes after
    said = subprocess.run(base, env=env, capture_output=True, text=True).stderr
    assert "(automatic:" in said and "system.threads=N or ELIT_THREADS=N chooses" in said
    assert "--threads" not in said
