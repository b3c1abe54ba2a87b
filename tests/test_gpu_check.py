"""benchmarks/gpu_check.py: the CPU smoke run prints every section and finite figures; the parts
that need no GPU (peak lookup, the host-constant cache a CUDA graph capture relies on) directly."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import elit

from conftest import REPO, load_script

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PEAK_TFLOPS = 0.05   # any peak: the smoke run only checks that MFU is computed as documented


def load_gpu_check():
    return load_script("benchmarks/gpu_check.py")


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--peak-tflops", str(PEAK_TFLOPS)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("GPU_CHECK_JSON ")]
    assert len(lines) == 1, out[-4000:]
    return proc.stdout, json.loads(lines[0][len("GPU_CHECK_JSON "):])


def test_smoke_prints_every_section(smoke):
    text, figures = smoke
    for title in ("[1/4] training throughput and MFU", "[2/4] forward time vs FLOPs per budget (eager)",
                  "[3/4] sampling: CFG, cheap CFG, CUDA graph step",
                  "[4/4] forward time vs FLOPs per budget (blocks compiled)", "== summary"):
        assert title in text
    assert "card: CPU (smoke) | torch " + torch.__version__ in text
    assert "CUDA graph capture and replay: skipped: needs CUDA" in text
    assert "CUDA events: skipped: needs CUDA" in text
    assert "sections with errors: none" in text and "ERROR" not in text
    assert "total wall time:" in text and finite_positive(figures["wall_s"])
    assert text.count("peak GPU memory") == 5   # 2 trainings, 2 forwards, sampling
    assert "[target >= 45%:" in text and "[target <= 1.10:" in text
    assert "errors" not in figures


def test_smoke_training_figures(smoke):
    text, figures = smoke
    train = figures["train"]
    assert set(train) == {"DiT-XL/2", "ELIT-DiT-XL/2 (multi-budget)"}
    for name, r in train.items():
        for key in ("images_per_s", "fwd_gflops_per_image", "fwd_gflops_expected", "train_tflops_per_s", "mfu"):
            assert finite_positive(r[key]), (name, key, r[key])
        assert math.isfinite(r["loss"])
        # MFU as documented: 3 x forward FLOPs x images/s over the peak
        assert r["mfu"] == pytest.approx(3 * r["fwd_gflops_per_image"] * 1e9 * r["images_per_s"] / (PEAK_TFLOPS * 1e12))
        assert "compile_blocks" in r["compile"]
        assert r["graphs_warmup"] > 0 and r["graphs_timed"] == 0   # compiled, and only in the warm-up
        assert r["compile"] in text
    dit, elit_mb = train["DiT-XL/2"], train["ELIT-DiT-XL/2 (multi-budget)"]
    assert dit["fwd_gflops_per_image"] == dit["fwd_gflops_expected"]      # one budget: full
    assert elit_mb["fwd_gflops_expected"] < dit["fwd_gflops_expected"]    # multi-budget costs less on average


def test_smoke_forward_figures(smoke):
    _, figures = smoke
    for variant in ("eager", "compiled"):
        tables = figures["forward"][variant]
        assert set(tables) == {"2", "4"}
        for rows in tables.values():
            assert [r["budget"] for r in rows] == [1, 2, 4, 8, 16]
            for r in rows:
                assert all(finite_positive(r[k]) for k in ("gflops", "flop_ratio", "time_ms", "time_ratio",
                                                            "ratio_over_flops"))
            ratios = [r["flop_ratio"] for r in rows]
            assert ratios == sorted(ratios) and ratios[-1] == 1.0 and rows[-1]["time_ratio"] == 1.0


def test_smoke_sampling_figures(smoke):
    _, figures = smoke
    sample = figures["sample"]
    cfg, ccfg = sample["guidance"]["cfg"], sample["guidance"]["ccfg"]
    assert set(cfg) == set(ccfg) == {"1", "2", "4", "8", "16"}
    for table in (cfg, ccfg):
        assert all(finite_positive(r["images_per_s"]) and finite_positive(r["gflops_per_image"]) for r in table.values())
    # cheap CFG's weak pass runs at budget 1: cheaper than CFG above it, the same at it
    assert ccfg["1"]["gflops_per_image"] == pytest.approx(cfg["1"]["gflops_per_image"])
    assert all(ccfg[b]["gflops_per_image"] < cfg[b]["gflops_per_image"] for b in ("2", "4", "8", "16"))
    audit = sample["capture_audit"]
    # the forward builds its RoPE coordinates on the device: nothing to copy from the host
    assert audit["copies_first_forward"] == 0 and audit["copies_left_after_cache"] == 0
    assert audit["host_syncs"] == 0 and audit["uncached_ops"] == []
    assert sample["cuda_graph"] == "skipped: needs CUDA"


def test_peak_lookup():
    gc = load_gpu_check()
    assert gc.peak_flops("NVIDIA H200", None)[0] == 989e12
    assert gc.peak_flops("NVIDIA H100 80GB HBM3", None)[0] == 989e12
    assert gc.peak_flops("NVIDIA H100 PCIe", None)[0] == 756e12
    assert gc.peak_flops("NVIDIA H100 NVL", None)[0] is None          # unknown: --peak-tflops
    assert gc.peak_flops("NVIDIA H100 NVL", 835)[0] == 835e12
    assert gc.peak_flops("Some GPU", None)[0] is None


def test_host_constant_cache_serves_repeated_copies():
    gc = load_gpu_check()
    coords = torch.arange(12).view(6, 2)
    with gc.HostConstantCache() as cache:
        a = coords.to("meta")
        b = coords.clone().to("meta")            # same values, another tensor: served from the cache
        c = (coords + 1).to("meta")              # other values: a new copy
        torch.ones(3).sum().item()               # a host sync is counted
    assert a is b and c is not a
    assert (cache.misses, cache.hits, cache.syncs, cache.uncached) == (2, 1, 1, [])


@pytest.mark.parametrize("name,overrides", [
    ("ELIT-DiT-S/2", dict(latent_pos="learned", write_sees_dropped=True, window_pos=True)),  # the authors' layout
    ("ELIT-U-ViT-original-S/2", {})])
def test_learned_latent_positions_make_no_host_copy_or_sync(name, overrides):
    """Compatibility mode's learned latent table is indexed on the device: a CUDA graph capture of
    its forward needs no host copy and no host sync (the table-size check is done in Python ints)."""
    gc = load_gpu_check()
    with torch.device("meta"):
        model = elit.create_model(name, **overrides)
    assert model.config.interface.latent_pos == "learned"
    for budget in (1, None):
        audit = gc.capture_audit(model.config, budget)
        assert audit["copies_first_forward"] == 0 and audit["copies_left_after_cache"] == 0, audit
        assert audit["host_syncs"] == 0 and audit["uncached_ops"] == [], audit
