"""Issue 18.2: one writer per output. A second `elit train` on a running --out exits at once with a
clear error (the first run is untouched); a lock left by a killed process is taken over with a
message; `elit sample`, `elit ref`, `elit eval --json`, `elit convert --out` and
`elit train-classifier --out` refuse an output another process is writing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import elit
from elit._lock import lock_path
from elit.cli import main
from test_train import TINY, needs_fmnist

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLD = ("import sys, time\nfrom elit._lock import exclusive_output\n"
        "with exclusive_output(sys.argv[1], 'holder'):\n    print('held', flush=True)\n    time.sleep(120)\n")


def train_command(out, steps):
    return [sys.executable, "-m", "elit", "train", "--out", str(out), "--max-steps", str(steps), *TINY]


def wait_for(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the first process ended before the test could use it"


@pytest.fixture
def holder():
    """Start a process that holds the lock of a path, and kill it at the end."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@needs_fmnist
def test_second_trainer_on_one_folder_exits_at_once(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(train_command(out, 120), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lock_path(out).exists(), first)
    second = subprocess.run(train_command(out, 120), env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert f"in use by another process (pid {first.pid} on host" in second.stderr
    lines = second.stderr.strip().splitlines()     # the thread count's notice, then one error line
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert all("CPU thread" in line for line in lines[:-1])
    assert first.wait(timeout=600) == 0, first.stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 121, 5))                               # each record once
    assert not lock_path(out).exists()


@needs_fmnist
def test_a_stale_lock_of_a_killed_trainer_is_taken_over(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_command(out, 400), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (out / "checkpoints").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"pid {proc.pid}" in lock_path(out).read_text()                # left behind by the kill
    again = subprocess.run(train_command(out, 12), env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"taking over the stale lock {lock_path(out)} of a process that is gone (pid {proc.pid}" in again.stderr
    assert not lock_path(out).exists()


def test_every_writing_command_refuses_a_locked_output(tmp_path, holder, capsys):
    model = tmp_path / "model"
    elit.save_pretrained(elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1,
                                           tail_depth=1, in_channels=1, num_classes=10, input_size=16), model)
    commands = {
        "samples": ["sample", "--model", str(model), "--steps", "1", "--seeds", "0", "--out"],
        "ref.npz": ["ref", "--data", "fmnist-test", "--num", "8", "--metric-net", "fmnist", "--quiet", "--out"],
        "rows.json": ["eval", "--model", str(model), "--num", "2", "--steps", "1", "--ref", "fmnist-test",
                      "--metrics", "fd_fmnist", "--no-progress", "--json"],
        "converted": ["convert", "--from", "dit", "--weights", "w.pt", "--preset", "DiT-S/2", "--out"],
        "classifier.safetensors": ["train-classifier", "--epochs", "1", "--out"],
    }
    for name, argv in commands.items():
        target = tmp_path / name
        proc = holder(target)
        assert main(argv + [str(target)]) == 2, name
        err = capsys.readouterr().err
        assert f"{target} is in use by another process (pid {proc.pid}" in err, (name, err)
        assert not target.exists(), name
        proc.kill()
        proc.wait()


def test_sample_takes_over_a_stale_lock(tmp_path, holder, capsys):
    model = tmp_path / "model"
    elit.save_pretrained(elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1,
                                           tail_depth=1, in_channels=1, num_classes=10, input_size=16), model)
    out = tmp_path / "samples"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["sample", "--model", str(model), "--steps", "1", "--seeds", "0-1", "--out", str(out)]) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not lock_path(out).exists() and len(list(out.glob("*.png"))) == 2
