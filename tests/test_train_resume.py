"""A run killed with SIGKILL, or stopped by SIGTERM / Ctrl-C, and rerun with the same command ends
bit-identical to an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from elit.train.checkpoint import checkpoint_path

from conftest import needs_fmnist

pytestmark = needs_fmnist

STEPS, EVERY = 24, 8
TINY = ["model.hidden_size=32", "model.depth=3", "model.num_heads=2", "model.head_depth=1", "model.tail_depth=1",
        "train.global_batch_size=8", "train.warmup_steps=4", "train.ema_decay=0.9", "log.log_every=4",
        f"log.ckpt_every={EVERY}", "log.keep_last=5", "log.sample_per_row=2", "log.sample_steps=2",
        "log.sample_budgets=[1,16]", "log.progress=false", "system.threads=1"]


def command(out):
    return [sys.executable, "-m", "elit", "train", "--config", "fmnist-elit-dit", "--out", str(out),
            "--max-steps", str(STEPS), *TINY]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    ref = tmp_path_factory.mktemp("ref")
    subprocess.run(command(ref), check=True, env=ENV, capture_output=True)
    return ref


def start_and_signal(out, sig):
    """The run started, and `sig` sent once its first checkpoint exists."""
    proc = subprocess.Popen(command(out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = checkpoint_path(out, EVERY)
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be signalled; the test needs a slower run"
    proc.send_signal(sig)
    out_text, err_text = proc.communicate(timeout=240)
    return proc.returncode, out_text, err_text


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
    killed = tmp_path / "killed"
    returncode, _, _ = start_and_signal(killed, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert not checkpoint_path(killed, STEPS).exists() and not (killed / "model").exists()

    again = subprocess.run(command(killed), env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout
    assert_same_run(reference, killed, resumed_at=EVERY)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_at_a_step_with_a_checkpoint_and_the_resume_is_bit_identical(tmp_path, reference, sig):
    """A scheduler's preemption (SIGTERM) or Ctrl-C: the run writes a checkpoint at the step it is
    on, exports no model, exits with the shell's 128 + signal, and the same command goes on from
    there to the uninterrupted run's weights."""
    stopped = tmp_path / "stopped"
    returncode, _, err = start_and_signal(stopped, sig)
    assert returncode == 128 + sig, err[-2000:]
    found = re.search(rf"{sig.name}: stopped at step (\d+) of {STEPS} with a checkpoint at step \1; rerun", err)
    assert found, err[-2000:]
    step = int(found.group(1))
    assert EVERY <= step < STEPS
    assert checkpoint_path(stopped, step).exists() and not (stopped / "model").exists()
    assert "Traceback" not in err

    again = subprocess.run(command(stopped), env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"(step {step})" in again.stdout
    assert_same_run(reference, stopped, resumed_at=step)


def assert_same_run(ref, other, resumed_at):
    a = torch.load(checkpoint_path(ref, STEPS), weights_only=True)
    b = torch.load(checkpoint_path(other, STEPS), weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), f"optimizer state {i}.{k} differs after resume"
    assert a["scheduler"] == b["scheduler"] and a["data"] == b["data"]
    wa, wb = load_file(str(ref / "model" / "model.safetensors")), load_file(str(other / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # The log of the resumed run has each step once, with the same losses as the uninterrupted run
    # (but for the record whose average the resume cut short).
    logs = [[json.loads(l) for l in (d / "log.jsonl").read_text().splitlines()] for d in (ref, other)]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == list(range(4, STEPS + 1, 4))
    whole = [i for i, r in enumerate(logs[0]) if r["step"] <= resumed_at or r["step"] - 4 >= resumed_at]
    assert len(whole) >= len(logs[0]) - 1
    assert [logs[1][i]["loss_budget"] for i in whole] == [logs[0][i]["loss_budget"] for i in whole]
