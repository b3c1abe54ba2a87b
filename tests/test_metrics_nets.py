"""Feature networks (Inception, DINOv2, the FD-FMNIST classifier), the metrics API and the CLI.

Inception runs ~0.2 s per image on these CPUs, so it sees a few dozen images only; the streaming
and torchmetrics checks use the 1000x faster Fashion-MNIST classifier.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from elit.eval.metrics import compute_metrics, compute_reference, get_extractor
from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics.dinov2 import DINOv2Features, DinoVisionTransformer
from elit.eval.metrics.images import fmnist_images
from elit.eval.metrics.inception import tf_bilinear_resize
from elit.eval.metrics.stats import frechet_distance, frechet_distance_features

TINY = dict(embed_dim=32, depth=2, num_heads=2)  # keeps patch 14 and the 37x37 position table


@pytest.fixture(scope="module")
def fmnist_ext():
    return get_extractor("fmnist")


def test_tf_bilinear_resize_is_tf1_legacy():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    y = tf_bilinear_resize(x, 8)
    # 2x upsampling, source = dst / 2, edge-clamped: 0, .5, 1, 1.5, 2, 2.5, 3, 3 (no half-pixel shift).
    np.testing.assert_allclose(y[0, 0, 0].numpy(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    assert torch.allclose(tf_bilinear_resize(x, 4), x)


def test_inception_features_and_fid_ordering():
    ext = get_extractor("inception")
    n = 16
    train, test = fmnist_images("train", n), fmnist_images("test", n)
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 1, 32, 32), dtype=np.uint8))
    f_train, f_test, f_noise = ext(train), ext(test), ext(noise)
    assert f_train.shape == (n, 2048) and f_train.dtype == np.float64 and np.isfinite(f_train).all()
    # Grayscale is copied to RGB, so both layouts give the same features.
    np.testing.assert_allclose(ext(train[:2].expand(-1, 3, -1, -1)), f_train[:2], rtol=1e-5, atol=1e-6)

    # The exact small-N form of the same FID (tested against frechet_distance): a d=2048 matrix root
    # would cost more than the 48 images.
    real, fake = frechet_distance_features(f_train, f_test), frechet_distance_features(f_train, f_noise)
    assert real < 0.5 * fake, (real, fake)


def test_inception_score_is_refused_with_a_clear_reason():
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(fmnist_images("test", 4), "fmnist-train", metrics=("is",), progress=False)


def test_dinov2_tiny_runs_and_loads_official_key_names(tmp_path):
    ext = DINOv2Features("random", config=TINY)
    x = fmnist_images("test", 3)
    f = ext(x)
    assert f.shape == (3, 32) and np.isfinite(f).all()
    assert "RANDOM" in ext.name  # random-weight numbers can never pass for real FDD
    # A state dict saved under the official names loads back and reproduces the features.
    torch.save(ext.model.state_dict(), tmp_path / "w.pth")
    loaded = DINOv2Features(str(tmp_path / "w.pth"), config=TINY)
    np.testing.assert_allclose(loaded(x), f, rtol=1e-5, atol=1e-5)
    # Register-token checkpoints (another variant) are refused by name.
    sd = dict(ext.model.state_dict(), register_tokens=torch.zeros(1, 4, 32))
    torch.save(sd, tmp_path / "reg.pth")
    with pytest.raises(ValueError, match="register_tokens"):
        DINOv2Features(str(tmp_path / "reg.pth"), config=TINY)


def test_dinov2_vitl14_key_layout_matches_official_checkpoint():
    with torch.device("meta"):
        sd = DinoVisionTransformer().state_dict()
    per_block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                 "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                 "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"]
    want = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"} | {f"blocks.{i}.{k}" for i in range(24) for k in per_block}
    assert set(sd) == want
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, 1024) and sd["cls_token"].shape == (1, 1, 1024)
    assert sd["mask_token"].shape == (1, 1024) and sd["patch_embed.proj.weight"].shape == (1024, 3, 14, 14)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3072, 1024) and sd["blocks.0.mlp.fc1.weight"].shape == (4096, 1024)
    assert sum(v.numel() for v in sd.values()) == 304_368_640  # ViT-L/14 as published (~304M)


def test_dinov2_pos_embed_interpolation_and_missing_weights(monkeypatch, tmp_path):
    m = DinoVisionTransformer(**TINY)
    with torch.no_grad():
        m.pos_embed.fill_(0.5)
    assert m.interpolate_pos_embed(37, 37) is m.pos_embed
    pe = m.interpolate_pos_embed(16, 16)
    assert pe.shape == (1, 257, 32) and torch.allclose(pe, torch.full_like(pe, 0.5))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ELIT_DINOV2_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dinov2-weights"):
        DINOv2Features(config=TINY)


def test_shipped_classifier_is_accurate_and_fd_fmnist_orders(fmnist_ext):
    from elit.data.fashion_mnist import load_fashion_mnist
    from elit.eval.metrics.classifier import evaluate_accuracy, to_input
    x, y = load_fashion_mnist("test")
    assert evaluate_accuracy(fmnist_ext.net, to_input(x[:2000].unsqueeze(1)), y[:2000]) > 0.85
    assert "NOT FID" in fmnist_ext.protocol
    train, test = fmnist_ext(fmnist_images("train", 500)), fmnist_ext(fmnist_images("test", 500))
    noise = fmnist_ext(np.random.default_rng(0).integers(0, 256, (500, 32, 32), dtype=np.uint8))

    def fd(a, b):
        return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fd(train, test) < 0.05 * fd(train, noise)


def test_classifier_training_is_deterministic(tmp_path):
    from safetensors.torch import load_file
    from elit.eval.metrics.classifier import train_classifier
    for name in ("a", "b"):
        train_classifier(str(tmp_path / f"{name}.safetensors"), epochs=1, num_train=512, log=lambda *_: None)
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


class _TorchmetricsWrapper(torch.nn.Module):
    """Our extractor as the nn.Module torchmetrics' FrechetInceptionDistance(feature=...) expects."""

    def __init__(self, ext):
        super().__init__()
        self.ext, self.num_features = ext, ext.dim

    def forward(self, x):
        return torch.from_numpy(self.ext(x))


def test_fid_matches_torchmetrics_with_the_same_feature_module(fmnist_ext):
    from torchmetrics.image.fid import FrechetInceptionDistance
    real, fake = fmnist_images("train", 400), fmnist_images("test", 400)
    tm = FrechetInceptionDistance(feature=_TorchmetricsWrapper(fmnist_ext))
    tm.update(real.expand(-1, 3, -1, -1), real=True)
    tm.update(fake.expand(-1, 3, -1, -1), real=False)
    ref = compute_reference(real, "fmnist", extractor=fmnist_ext, progress=False)
    ours = compute_metrics((fake[i:i + 64] for i in range(0, 400, 64)), ref, metrics=("fd_fmnist",),
                           extractors={"fmnist": fmnist_ext}, progress=False)
    assert ours["fd_fmnist"] == pytest.approx(float(tm.compute()), rel=1e-6)
    assert ours["num_samples"] == 400


def test_compute_metrics_streams_checks_reference_and_nan(fmnist_ext, tmp_path):
    ref_path = tmp_path / "ref.npz"
    compute_reference("fmnist-test", "fmnist", str(ref_path), num=300, keep_features=True, extractor=fmnist_ext,
                      progress=False)
    gen = (b for b in fmnist_images("train", 300).split(50))
    # The P/R plumbing, run on the fast network in place of Inception.
    res = compute_metrics(gen, {"fmnist": ref_path, "inception": ref_path}, metrics=("fd_fmnist", "precision", "recall"),
                          extractors={"fmnist": fmnist_ext, "inception": fmnist_ext}, progress=False)
    assert res["fd_fmnist"] > 0 and 0.5 < res["precision"] <= 1 and 0.5 < res["recall"] <= 1
    assert "300 samples" in res["protocols"]["fd_fmnist"] and "NOT FID" in res["protocols"]["fd_fmnist"]
    # A reference made with another network is refused.
    with pytest.raises(ValueError, match="feature network"):
        compute_metrics(fmnist_images("train", 8), ref_path, metrics=("fdd",),
                        extractors={"dinov2": DINOv2Features("random", config=TINY)}, progress=False)

    class NaNNet(FeatureExtractor):
        name, protocol, dim = "nan-net", "test", 4

        def forward(self, x):
            return torch.full((len(x), 4), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(fmnist_images("train", 8), "fmnist-test", metrics=("fd_fmnist",),
                        extractors={"fmnist": NaNNet()}, progress=False, ref_num=8)


def test_cli_ref_and_fid(tmp_path, capsys, fmnist_ext):
    from elit.cli import main
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(fmnist_images("train", 300)[:, 0].numpy()):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    ref = tmp_path / "ref.npz"
    assert main(["ref", "--data", "fmnist-test", "--num", "300", "--metric-net", "fmnist", "--out", str(ref),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fid", str(ref), str(folder), "--metric-net", "fmnist", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "fd_fmnist" and out["fd_fmnist"] > 0 and "NOT FID" in out["protocol"]
    assert out["num_a"] == out["num_b"] == 300
    # A reference from another network: exit status 2 and a one-line reason.
    assert main(["fid", str(ref), str(folder), "--quiet"]) == 2
    assert "feature network" in capsys.readouterr().err
    assert main(["fid", str(ref), str(tmp_path / "nope"), "--metric-net", "fmnist", "--quiet"]) == 2
    assert os.path.exists(ref)
