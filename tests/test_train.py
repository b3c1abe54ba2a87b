"""`elit train`: configs, real tiny runs on Fashion-MNIST, export, and the bad-input errors."""
import json
from pathlib import Path

import pytest
import torch
import yaml

import elit
from elit.cli import main as elit_main
from elit.train.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from elit.train.config import list_presets, load_config

from conftest import needs_fmnist

TINY = ["model.hidden_size=32", "model.depth=3", "model.num_heads=2", "model.head_depth=1", "model.tail_depth=1",
        "train.global_batch_size=8", "train.warmup_steps=2", "train.ema_decay=0.9", "log.log_every=5",
        "log.ckpt_every=5", "log.sample_per_row=2", "log.sample_steps=2", "log.sample_budgets=[1,16]",
        "log.progress=false", "system.threads=1"]


def train_cli(out, *extra, config="fmnist-elit-dit", steps=10):
    tiny = TINY if "elit" in config else [o for o in TINY if "_depth=" not in o or "model.depth" in o]  # a plain DiT has no split
    return elit_main(["train", "--config", config, "--out", str(out), "--max-steps", str(steps), *tiny, *extra])


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- configs
def test_presets_resolve():
    assert {"fmnist-elit-dit", "fmnist-elit-dit-single", "fmnist-dit", "imagenet256-elit-dit-xl2",
            "imagenet256-elit-dit-xl2-mb"} <= set(list_presets())
    for name in list_presets():
        load_config(name)
    mb, sb = load_config("imagenet256-elit-dit-xl2-mb"), load_config("imagenet256-elit-dit-xl2")
    assert (mb.train.global_batch_size, sb.train.global_batch_size) == (384, 256)
    assert mb.model.backbone.hidden_size == 1152 and mb.model.backbone.depth == 28 and mb.model.split.head == 4
    assert (mb.train.lr, mb.train.warmup_steps, mb.train.ema_decay, mb.train.max_steps) == (1e-4, 10000, 0.9999, 500000)
    base, dit = load_config("fmnist-elit-dit"), load_config("fmnist-dit")
    assert dit.model.backbone == base.model.backbone and not dit.model.elastic


def test_overrides_beat_the_file_and_unknown_keys_are_named():
    cfg = load_config("fmnist-elit-dit", ["model.hidden_size=48", "train.lr=2e-4", "log.sample_budgets=[1,4]"])
    assert cfg.model.backbone.hidden_size == 48 and cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.log.sample_budgets == [1, 4]
    with pytest.raises(ValueError, match=r"train\.lrr.*valid keys in 'train':.*\blr\b"):
        load_config("fmnist-elit-dit", ["train.lrr=1"])
    with pytest.raises(ValueError, match=r"model\.backbone\.widht.*hidden_size"):
        load_config("fmnist-elit-dit", ["model.widht=1"])
    with pytest.raises(ValueError, match="unknown config section"):
        load_config("fmnist-elit-dit", ["optim.lr=1"])
    with pytest.raises(ValueError, match="budget_draw=full"):
        load_config("fmnist-dit", ["train.budget_draw=multi"])


def test_config_file_and_cli_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "ELIT-DiT-S/2"}, "data": {"name": "fmnist"},
                                    "train": {"lr": "3e-4"}}))
    cfg = load_config(str(path))
    assert cfg.model.backbone.hidden_size == 384 and cfg.train.lr == 3e-4
    assert elit_main(["train", "--config", "no-such-preset", "--out", str(tmp_path / "x")]) == 2
    assert "neither a file nor a built-in preset" in capsys.readouterr().err
    assert elit_main(["train", "--out", str(tmp_path / "x"), "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "train.bogus" in err and "global_batch_size" in err and len(err.strip().splitlines()) == 1


def test_one_key_once_in_a_file_and_flags_and_overrides_by_one_rule(tmp_path, capsys):
    """Issue 30: a YAML key written twice is refused (YAML keeps the last silently); --max-steps beside
    train.max_steps= is refused (which wins was a guess); of two overrides of one key the later wins,
    is said, and the earlier one is still type-checked."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  preset: ELIT-DiT-S/2\ndata:\n  name: fmnist\ntrain:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(ValueError, match=r"key 'lr' is set twice in one mapping \(lines 6 and 7\)"):
        load_config(str(path))
    path.write_text("base: &b {lr: 1.0e-3}\nmodel: {preset: ELIT-DiT-S/2}\ndata: {name: fmnist}\n"
                    "train: {<<: *b, lr: 2.0e-3}\n")
    with pytest.raises(ValueError, match="unknown config section 'base'"):   # a merge key is not a duplicate
        load_config(str(path))
    for value in ("2.5", "true", "7"):
        assert elit_main(["train", "--out", str(tmp_path / "r"), "--max-steps", "5", f"train.max_steps={value}"]) == 2
        assert f"train.max_steps is set twice (--max-steps 5 and train.max_steps={value})" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be an integer, got 2.5"):
        load_config("fmnist-elit-dit", ["train.max_steps=2.5", "train.max_steps=5"])
    assert load_config("fmnist-elit-dit", ["train.lr=1e-3", "train.lr=3e-3"]).train.lr == 3e-3
    assert elit_main(["train", "--out", str(tmp_path / "r"), "--print-config", "train.lr=1e-3", "train.lr=3e-3"]) == 0
    out, err = capsys.readouterr()
    assert "lr: 0.003" in out and "train.lr=3e-3 replaces train.lr=1e-3" in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- real runs
@needs_fmnist
def test_loss_decreases_on_fashion_mnist(tmp_path):
    out = tmp_path / "run"
    assert train_cli(out, "train.lr=2e-3", "log.ckpt_every=100", steps=40) == 0
    log = read_log(out)
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30, 35, 40]
    first, last = log[0]["loss"], sum(r["loss"] for r in log[-2:]) / 2
    # At init the output is 0, so the loss is E|eps - x0|^2 = 1 + E[x0^2]; a model that learns anything
    # (even just the mean image) gets well below that.
    x0 = torch.stack([elit.data.FashionMNIST()[i][0] for i in range(512)])
    assert abs(first - (1 + x0.pow(2).mean().item())) < 0.15
    assert last < 0.75 * first, (first, last)
    rec = log[-1]
    assert set(rec) >= {"step", "loss", "loss_t", "loss_budget", "lr", "images_per_s"}
    assert all(1 <= int(b) <= 16 for b in rec["loss_budget"]) and len(rec["loss_t"]) >= 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 40 and saved["model"]["backbone"]["hidden_size"] == 32   # one spelling
    assert (out / "samples" / "step-0000040.png").is_file()


@needs_fmnist
@pytest.mark.parametrize("config", ["fmnist-elit-dit", "fmnist-dit"])
def test_exported_ema_model_round_trips(tmp_path, config):
    out = tmp_path / "run"
    extra = ["log.sample_budgets=null"] if config == "fmnist-dit" else []
    assert train_cli(out, *extra, config=config, steps=5) == 0
    loaded = elit.load_pretrained(out / "model")
    ckpt = load_checkpoint(list_checkpoints(out)[-1])
    for name, p in loaded.named_parameters():
        assert torch.equal(p.detach(), ckpt["ema"][name]), name
    assert not all(torch.equal(ckpt["ema"][n], ckpt["model"][n]) for n in ckpt["model"])  # EMA != raw weights
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([0.3, 0.7]), torch.tensor([1, 2])
    budget = 4 if loaded.budgets else None
    ref = elit.ELITModel(loaded.config)
    ref.load_state_dict(ckpt["ema"])
    torch.testing.assert_close(loaded(x, t, y, budget=budget), ref.eval()(x, t, y, budget=budget), rtol=0, atol=0)


# ---------------------------------------------------------------- bad input
def test_missing_data_folder(tmp_path, capsys):
    assert train_cli(tmp_path / "run", f"data.root={tmp_path / 'nowhere'}") == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err


@needs_fmnist
@pytest.mark.parametrize("override, needle", [
    ("model.in_channels=4", "set model.in_channels=1"),
    ("model.input_size=64", "set model.input_size=32"),
    ("model.num_classes=1000", "set model.num_classes=10"),
    ("model.window=[3,3]", "do not divide"),
    ("log.sample_budgets=[0]", "log.sample_budgets"),
])
def test_model_that_does_not_fit_the_data(tmp_path, capsys, override, needle):
    assert train_cli(tmp_path / "run", override) == 2
    assert needle in capsys.readouterr().err
    assert not list_checkpoints(tmp_path / "run")


@needs_fmnist
def test_imagenet_config_on_fashion_mnist_is_refused(tmp_path, capsys):
    # null data keys mean "not given", so a latents config can be pointed at Fashion-MNIST.
    code = elit_main(["train", "--config", "imagenet256-elit-dit-xl2", "--out", str(tmp_path / "r"), "data.name=fmnist",
                      "data.flip=null"])
    assert code == 2 and "set model.in_channels=1" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


@needs_fmnist
def test_corrupt_checkpoint_and_changed_model_leave_checkpoints_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(out, steps=10) == 0
    first, latest = list_checkpoints(out)
    assert latest == checkpoint_path(out, 10)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated, as by a full disk
    before = {p.name: p.read_bytes() for p in list_checkpoints(out)}
    assert train_cli(out, steps=15) == 2
    err = capsys.readouterr().err
    assert "step-0000010.pt" in err and "corrupt or truncated" in err and "delete it" in err and first.name in err
    assert {p.name: p.read_bytes() for p in list_checkpoints(out)} == before
    # Following the advice resumes from the previous checkpoint.
    latest.unlink()
    assert train_cli(out, "model.hidden_size=48", steps=15) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "hidden_size: 32 -> 48" in err
    assert {p.name for p in list_checkpoints(out)} == {first.name}
    assert train_cli(out, steps=15) == 0
    assert [p.name for p in list_checkpoints(out)][-1] == "step-0000015.pt"


@needs_fmnist
@pytest.mark.slow
def test_compiled_training_keeps_parameter_names_and_exports(tmp_path):
    """system.compile=true (elit.compile_blocks, inductor) trains across budgets and writes the
    same checkpoint layout as eager training."""
    out = tmp_path / "run"
    assert train_cli(out, "system.compile=true", "log.sample_every=0", steps=5) == 0
    ckpt = load_checkpoint(list_checkpoints(out)[-1])
    assert set(ckpt["model"]) == set(elit.ELITModel(elit.load_pretrained(out / "model").config).state_dict())
    assert len(set(read_log(out)[-1]["loss_budget"])) >= 2      # several budgets through the same graphs


def test_a_train_section_written_before_0_3_still_reads():
    """`train.budget` was the name before 0.3 (a budget itself is the per-call number); it reads as
    budget_draw, and giving both is refused."""
    from elit.train.config import train_section
    assert train_section({"budget": "full", "lr": 1e-3}) == {"budget_draw": "full", "lr": 1e-3}
    with pytest.raises(ValueError, match="keep budget_draw"):
        train_section({"budget": "full", "budget_draw": "multi"})
