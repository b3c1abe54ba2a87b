"""Two real gloo processes under torchrun: DDP equals one process with the same global batch, every rank
draws the same budgets, FSDP2 trains, checkpoints, resumes and exports, and a SIGTERM to torchrun
stops every rank at one step with a checkpoint."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import elit
from elit.cli import main as elit_main
from elit.train.checkpoint import checkpoint_path

from conftest import needs_fmnist

pytestmark = needs_fmnist

STEPS = 6
TINY = ["model.hidden_size=32", "model.depth=3", "model.num_heads=2", "model.head_depth=1", "model.tail_depth=1",
        "train.global_batch_size=8", "train.lr=1e-3", "train.ema_decay=0.5", "log.log_every=1",
        "log.ckpt_every=3", "log.sample_per_row=2", "log.sample_steps=2", "log.sample_budgets=[1,16]",
        "log.progress=false", "system.threads=1"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(TORCHRUN + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def train_args(out, steps, *extra):
    return ["-m", "elit", "train", "--out", str(out), "--max-steps", str(steps), *TINY, *extra]


def final(out):
    return torch.load(checkpoint_path(out, STEPS), weights_only=True)


def log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert elit_main(train_args(out, STEPS)[2:]) == 0
    return out


def assert_same_training(a, b, atol):
    la, lb = log(a), log(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, STEPS + 1))
    for ra, rb in zip(la, lb):
        assert ra["loss_budget"].keys() == rb["loss_budget"].keys()  # the same budget at every step
        assert abs(ra["loss"] - rb["loss"]) < 1e-5, (ra["loss"], rb["loss"])
    ca, cb = final(a), final(b)
    for part in ("model", "ema"):
        for k in ca[part]:
            torch.testing.assert_close(ca[part][k], cb[part][k], rtol=0, atol=atol, msg=f"{part}.{k}")


def test_ddp_two_processes_match_one_process(tmp_path, single):
    out = tmp_path / "ddp"
    torchrun(train_args(out, STEPS))
    # Adam moves each weight by at most ~lr per step; float summation order differs between the runs,
    # so allow a small fraction of one step's move.
    assert_same_training(single, out, atol=1e-3 * 0.05)
    assert elit.load_pretrained(out / "model").budgets == list(range(1, 17))


def test_fsdp2_two_processes_train_resume_and_export(tmp_path, single):
    out = tmp_path / "fsdp"
    torchrun(train_args(out, 3, "system.parallel=fsdp"))
    proc = torchrun(train_args(out, STEPS, "system.parallel=fsdp"))
    assert "resumed from" in proc.stdout
    assert_same_training(single, out, atol=1e-3 * 0.05)
    model = elit.load_pretrained(out / "model")
    ema = final(out)["ema"]
    assert all(torch.equal(p.detach(), ema[n]) for n, p in model.named_parameters())


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path):
    """torchrun passes a SIGTERM (a scheduler's preemption) on to its workers, at slightly different
    moments; the ranks agree on the step, write one FSDP2 checkpoint together (a collective: ranks
    that disagreed would hang here until the timeout) and the same command resumes from it."""
    out = tmp_path / "stopped"
    extra = ("system.parallel=fsdp", "log.ckpt_every=20", "log.log_every=20", "log.sample_every=0")
    args = train_args(out, 2000, *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(TORCHRUN + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, deadline = checkpoint_path(out, 20), time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    said = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    stops = re.findall(r"SIGTERM: stopped at step (\d+) of 2000 with a checkpoint at step \1", said)
    assert len(stops) == 1, said[-3000:]             # said once, by rank 0
    step = int(stops[0])
    assert 20 <= step < 2000 and checkpoint_path(out, step).exists() and not (out / "model").exists()
    again = torchrun(train_args(out, step + 2, *extra))
    assert f"(step {step})" in again.stdout
    assert (out / "model" / "model.safetensors").is_file()


BUDGET_CHECK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from elit.model import BudgetSpace
    from elit.train.budgets import TrainingBudgets
    from elit.train.logger import LossStats
    dist.init_process_group("gloo")
    rank, budgets = dist.get_rank(), list(range(1, 17))
    report = open(f"{sys.argv[1]}/rank{rank}.txt", "w")  # one file per rank: stdout lines interleave
    seeds = {"shared": 0, "per-rank": rank}  # the second imitates a rank-dependent draw
    for name, seed in seeds.items():
        schedule, stats = TrainingBudgets("multi", BudgetSpace(16, 1), seed=seed), LossStats(2, budgets, "cpu")
        drawn = [schedule(step) for step in range(50)]
        for step, b in enumerate(drawn):
            stats.add(step, torch.ones(2), torch.tensor([0.1, 0.9]), b)
        gathered = [None, None]
        dist.all_gather_object(gathered, drawn)
        try:
            stats.reduce(2)
            print(name, "agree", gathered[0] == gathered[1], file=report)
        except RuntimeError:
            print(name, "refused", gathered[0] == gathered[1], file=report)
    report.close()
    dist.barrier(); dist.destroy_process_group()
""")


def test_every_rank_draws_the_same_budget(tmp_path):
    script = tmp_path / "budget_check.py"
    script.write_text(BUDGET_CHECK)
    torchrun([str(script), str(tmp_path)])
    for rank in (0, 1):
        lines = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert lines == ["shared agree True",
                         "per-rank refused False"]  # the trainer's check catches a desync
