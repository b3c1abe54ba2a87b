"""Issue 18: `elit train` never says one thing and does another, and never loses or mixes a run:
changed optimiser settings apply on resume, divergence stops the run, foreign folders are refused,
a torn log line is tolerated, and the first record after a resume says what it averages."""
import re

import pytest
import torch

from elit.train.checkpoint import checkpoint_path, list_checkpoints
from test_train import needs_fmnist, read_log, train_cli

pytestmark = needs_fmnist


def test_changed_optimiser_settings_apply_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(out, "train.lr=2e-3", steps=10) == 0
    assert train_cli(out, "train.lr=1e-5", "train.betas=[0.8,0.95]", "train.weight_decay=0.1", steps=20) == 0
    assert "lr: 0.002 -> 1e-05" in capsys.readouterr().out
    lrs = {r["step"]: r["lr"] for r in read_log(out)}
    assert lrs[5] == lrs[10] == pytest.approx(2e-3)
    assert lrs[15] == lrs[20] == pytest.approx(1e-5)      # the logged lr follows the new setting
    groups = torch.load(checkpoint_path(out, 20), weights_only=True)["optimizer"]["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-5) and tuple(g["betas"]) == (0.8, 0.95) and g["weight_decay"] == 0.1
               for g in groups)


def test_a_changed_schedule_applies_on_resume(tmp_path):
    out = tmp_path / "run"
    assert train_cli(out, "train.lr=1e-3", steps=10) == 0
    assert train_cli(out, "train.lr=1e-3", "train.lr_schedule=cosine", steps=20) == 0
    lrs = {r["step"]: r["lr"] for r in read_log(out)}
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[15] == pytest.approx(1e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 15 / 20)).item()))


def test_first_record_after_resume_says_what_it_averages(tmp_path):
    out = tmp_path / "run"
    assert train_cli(out, "log.ckpt_every=4", "log.log_every=5", steps=8) == 0
    assert train_cli(out, "log.ckpt_every=4", "log.log_every=5", steps=15) == 0
    log = {r["step"]: r for r in read_log(out)}
    assert sorted(log) == [5, 8, 10, 15]
    assert log[10]["steps_averaged"] == 2 and log[10]["first_after_resume_at"] == 8
    assert log[15]["steps_averaged"] == 5 and "first_after_resume_at" not in log[15]


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(out, "train.lr=1e-3", steps=5) == 0            # a good run, exported at step 5
    exported = (out / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    code = train_cli(out, "train.lr=1e8", "train.grad_clip=0", "train.max_nonfinite_steps=2", "log.ckpt_every=1",
                     steps=40)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "training diverged" in err and "Lower train.lr (now 1e+08)" in err
    first_bad = int(re.search(r"at steps (\d+)-(\d+) \(3 in a row\)", err).group(1))
    kept = list_checkpoints(out)
    assert kept and max(int(p.stem.split("-")[1]) for p in kept) < first_bad    # none written during the streak
    assert f"the last checkpoint, {kept[-1]}, is kept" in err
    for path in kept:
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for part in ("model", "ema") for v in state[part].values()), path.name
    assert (out / "model" / "model.safetensors").read_bytes() == exported       # no NaN model exported


def test_patience_zero_stops_at_the_first_nonfinite_step(tmp_path, capsys):
    code = train_cli(tmp_path / "run", "train.lr=1e8", "train.grad_clip=0", "train.max_nonfinite_steps=0", steps=40)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and re.search(r"at steps (\d+)-\1 \(1 in a row\)", err), err
    assert not (tmp_path / "run" / "model").exists()


def test_foreign_folders_are_refused_and_nothing_is_written(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert train_cli(other, steps=2) == 2
    assert "not an elit run folder" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # Another run's folder without checkpoints (killed early): a different model is refused.
    run = tmp_path / "run"
    run.mkdir()
    assert train_cli(tmp_path / "unused", "--print-config", steps=2) == 0
    saved = capsys.readouterr().out
    assert "hidden_size: 32" in saved
    (run / "config.yaml").write_text(saved.replace("hidden_size: 32", "hidden_size: 48"))
    (run / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert train_cli(run, steps=2) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "model.backbone.hidden_size: 48 -> 32" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    (tmp_path / "afile").write_text("x")
    assert train_cli(tmp_path / "afile", steps=2) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(out, steps=10) == 0
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 0.9')              # a kill mid-write
    capsys.readouterr()
    assert train_cli(out, steps=15) == 0
    assert "dropping the torn last line" in capsys.readouterr().err
    assert [r["step"] for r in read_log(out)] == [5, 10, 15]
    lines = (out / "log.jsonl").read_text().splitlines()
    lines.insert(1, "garbage")
    (out / "log.jsonl").write_text("\n".join(lines) + "\n")
    assert train_cli(out, steps=20) == 2
    err = capsys.readouterr().err
    assert "log.jsonl line 2" in err and len(err.strip().splitlines()) == 1


def test_a_resume_records_and_reuses_the_thread_count_and_says_when_it_changes(tmp_path, capsys):
    """Issue 30: the checkpoint holds the thread count it was trained with; going on with another
    count is said (the weights then differ in the last bits from an uninterrupted run)."""
    out = tmp_path / "run"
    before = torch.get_num_threads()
    try:
        assert train_cli(out, steps=5) == 0      # system.threads=1
        assert torch.load(checkpoint_path(out, 5), weights_only=True)["threads"] == 1
        capsys.readouterr()
        assert train_cli(out, "system.threads=2", steps=10) == 0
        said = capsys.readouterr()
        assert "trained with 1 CPU thread so far and goes on with 2" in said.out
        assert torch.load(checkpoint_path(out, 10), weights_only=True)["threads"] == 2
        assert train_cli(out, "system.threads=2", steps=8) == 2     # below the run's step: refused, named
        assert "is at step 10 already" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
