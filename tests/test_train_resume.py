"""A run killed with SIGKILL and rerun with the same command ends bit-identical to an uninterrupted run."""
import json
import os
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


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(command(ref), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = checkpoint_path(killed, EVERY)
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; the test needs a slower run"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not checkpoint_path(killed, STEPS).exists() and not (killed / "model").exists()

    again = subprocess.run(command(killed), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout

    a = torch.load(checkpoint_path(ref, STEPS), weights_only=True)
    b = torch.load(checkpoint_path(killed, STEPS), weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), f"optimizer state {i}.{k} differs after resume"
    assert a["scheduler"] == b["scheduler"] and a["data"] == b["data"]
    wa, wb = load_file(str(ref / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # The log of the resumed run has each step once, with the same losses as the uninterrupted run.
    logs = [[json.loads(l) for l in (d / "log.jsonl").read_text().splitlines()] for d in (ref, killed)]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == list(range(4, STEPS + 1, 4))
    assert [r["loss_budget"] for r in logs[1]] == [r["loss_budget"] for r in logs[0]]
