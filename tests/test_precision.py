"""Issue 28, the precision policy (elit._precision): bf16 autocast only where the hardware does bf16
natively and, on a CPU, a timed pass of the model says it pays; never an emulated path by auto;
`--precision` the same on every command, the choice printed once and recorded."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from elit import _precision as P
from elit.cli import main
from elit.errors import UserError
from conftest import REPO
from test_sampling import one_thread, tiny_model  # noqa: F401  (fixture re-used)
from test_sampling_cli import model_dir  # noqa: F401  (fixture re-used)


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has these feature flags."""
    def set_flags(*names):
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(names))
    return set_flags


def resolve(requested, device="cpu", probe=None):
    said = []
    return P.resolve_precision(requested, device, probe, said.append), said


def test_native_bf16_is_read_from_the_cpu_flags_and_the_gpu_generation(flags, monkeypatch):
    flags("sse4_2", "avx2", "avx512f")
    assert P.native_bf16("cpu") is None                       # AVX-512 without its BF16 extension emulates
    flags("avx2", "avx512_bf16")
    assert P.native_bf16("cpu") == "AVX512-BF16"
    flags("avx512_bf16", "amx_bf16", "amx_tile")
    assert P.native_bf16("cpu") == "AMX-BF16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert P.native_bf16("cuda") == "CUDA sm_90"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))   # Turing: no bf16
    assert P.native_bf16("cuda:0") is None


def test_this_machines_flags_are_read(flags):
    text = open("/proc/cpuinfo").read() if P.cpu_flags() else ""
    assert ("avx512_bf16" in text or "amx_bf16" in text) == (P.native_bf16("cpu") is not None)


def test_auto_never_takes_an_emulated_bf16_and_does_not_even_time_it(flags):
    flags("avx2")
    choice, said = resolve("auto", probe=lambda: pytest.fail("the probe ran without native bf16"))
    assert choice == "fp32" and "no native bf16" in said[0]


def test_auto_on_a_native_cpu_follows_the_timed_pass(flags):
    flags("avx512_bf16")
    choice, said = resolve("auto", probe=lambda: 2.4)
    assert choice == "bf16" and "2.40x" in said[0] and "AVX512-BF16" in said[0]
    choice, said = resolve("auto", probe=lambda: P.MIN_SPEEDUP - 0.01)      # a tiny model: the casts cost more
    assert choice == "fp32" and "under 1.1x" in said[0]
    choice, said = resolve("auto")                                           # training: no probe, fp32
    assert choice == "fp32" and "GPU only" in said[0]


def test_auto_on_a_gpu_with_bf16_takes_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert resolve("auto", "cuda") == ("bf16", ["precision bf16 autocast (auto: CUDA sm_80)"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert resolve("auto", "cuda")[0] == "fp32"


def test_an_explicit_choice_wins_and_an_emulated_bf16_is_said_to_be_slow(flags):
    flags("avx512_bf16")
    assert resolve("fp32", probe=lambda: 3.0)[0] == "fp32"
    flags("avx2")
    choice, said = resolve("bf16")
    assert choice == "bf16" and "emulated" in said[0] and "slower than fp32" in said[0]
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        resolve("fp16")


def test_a_bf16_model_autocasts_its_passes_and_answers_in_fp32():
    model = tiny_model()
    x, y = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 4, 9])
    with torch.no_grad():
        full = model(x, 0.5, y, budget=2)
        model.compute_precision = "bf16"
        half = model(x, 0.5, y, budget=2)
    assert half.dtype == torch.float32
    error = float((half - full).norm() / full.norm())
    assert 1e-5 < error < 3e-2, error          # rounded to bf16 somewhere, and not by much


def test_the_probe_times_both_and_leaves_the_model_as_it_was():
    model = tiny_model()
    speedup = P.probe_speedup(model, batch=2, repeats=1)
    assert speedup > 0 and model.compute_precision == "fp32"


def sample_cli(model_dir, out, *extra):
    return main(["sample", "--model", str(model_dir), "--seeds", "0-3", "--steps", "3", "--budget", "2",
                 "--out", str(out), "--device", "cpu", *extra])


def test_elit_sample_prints_and_records_the_precision(model_dir, tmp_path, capsys):
    assert sample_cli(model_dir, tmp_path / "fp32", "--precision", "fp32") == 0
    assert "elit sample: precision fp32 (--precision fp32)" in capsys.readouterr().out
    assert sample_cli(model_dir, tmp_path / "bf16", "--precision", "bf16") == 0
    assert "precision bf16 autocast" in capsys.readouterr().out
    record = json.loads((tmp_path / "bf16" / "sampling.json").read_text())
    assert record["precision"] == "bf16" and record["settings"]["precision"] == "bf16"
    assert sample_cli(model_dir, tmp_path / "bf16", "--precision", "fp32") == 2    # no fp32 images among them
    assert "other settings" in capsys.readouterr().err
    images = [np.asarray(Image.open(tmp_path / p / "000002.png"), dtype=np.int16) for p in ("fp32", "bf16")]
    assert np.abs(images[0] - images[1]).max() <= 24                   # the same image, rounded a little apart
    assert sample_cli(model_dir, tmp_path / "auto") == 0
    choice = json.loads((tmp_path / "auto" / "sampling.json").read_text())["precision"]
    assert f"precision {'bf16 autocast' if choice == 'bf16' else 'fp32'} (auto: " in capsys.readouterr().out
    if P.native_bf16("cpu") is None:          # auto here: fp32, bit for bit what --precision fp32 wrote
        assert choice == "fp32"
        assert (tmp_path / "auto" / "000002.png").read_bytes() == (tmp_path / "fp32" / "000002.png").read_bytes()


def test_elit_train_takes_precision_as_a_flag_and_refuses_it_twice(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path / "r"), "--precision", "bf16", "system.precision=fp32",
               "--print-config"])
    assert rc == 2 and "system.precision is set twice" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--precision", "bf16", "--print-config"]) == 0
    assert "precision: bf16" in capsys.readouterr().out


@pytest.mark.slow
def test_training_curves_compare_one_run_in_both_precisions(tmp_path):
    """benchmarks/precision_training.py --smoke: two real `elit train` runs that share the seed, data,
    noise and budget draws; their losses differ by the bf16 arithmetic alone (close, not equal); a
    rerun reuses the finished runs."""
    command = [sys.executable, str(REPO / "benchmarks" / "precision_training.py"), "--out", str(tmp_path / "runs"),
               "--smoke", "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "p.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "system.precision=bf16" in done.stdout and "system.precision=fp32" in done.stdout
    entry = json.loads((tmp_path / "p.json").read_text())["precision-training"]
    assert [c["step"] for c in entry["curve"]] == [5, 10]
    relative = [abs(c["bf16"] - c["fp32"]) / c["fp32"] for c in entry["curve"]]
    assert 0 < max(relative) < 0.05, entry["curve"]
    assert set(entry["seconds_per_step"]) == {"fp32", "bf16"} and entry["batch"] == 16    # the smoke's
    assert Image.open(tmp_path / "p.png").size[0] > 100
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "elit train" not in again.stdout
    assert json.loads((tmp_path / "p.json").read_text())["precision-training"]["curve"] == entry["curve"]
