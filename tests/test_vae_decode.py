"""Latent-space models: `elit sample --vae` and `elit eval --vae` decode with a (tiny, random) AutoencoderKL."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import elit
from elit.cli import main
from elit.vae import LatentDecoder, load_vae

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
                                  scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(root / "vae")
    # 4-channel 8x8 latents (a 2-level VAE halves once: 16x16 pixels); patch 2 -> 4x4 tokens, 2x2 windows
    model = elit.create_model("ELIT-DiT-S/2", input_size=8, in_channels=4, num_classes=10, hidden_size=32,
                              depth=3, num_heads=4, head_depth=1, tail_depth=1, window=[2, 2])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    elit.save_pretrained(model, root / "model")
    return root


def test_decoder_undoes_the_extraction_scaling(setup):
    vae = load_vae(str(setup / "vae"))
    decode = LatentDecoder(vae)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = vae.decode(z / 0.5 + 0.1).sample
    assert torch.allclose(decode(z), expected, atol=1e-5)
    assert decode(z).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="4-channel"):
        decode(torch.randn(1, 3, 8, 8))


def test_sample_cli_decodes_latents_to_rgb_pngs(setup, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--model", str(setup / "model"), "--out", str(out), "--seeds", "0-1", "--steps", "2",
                 "--budget", "2"]) == 2
    assert "--vae" in capsys.readouterr().err and not out.exists()
    assert main(["sample", "--model", str(setup / "model"), "--out", str(out), "--seeds", "0-1", "--steps", "2",
                 "--budget", "2", "--vae", str(setup / "vae")]) == 0
    image = np.asarray(Image.open(out / "000001.png"))
    assert image.shape == (16, 16, 3)
    # the PNG is the decoded sample of seed 1
    model = elit.load_pretrained(setup / "model")
    latents = elit.sample(model, seeds=[1], budget=2, steps=2)
    pixels = LatentDecoder(load_vae(str(setup / "vae")))(latents)
    expected = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(image.astype(float) - expected).max() <= 1


def test_eval_cli_decodes_before_measuring(setup, tmp_path):
    from elit.eval.metrics.compute import compute_reference
    ref = tmp_path / "ref.npz"
    # any 3-channel images work as a reference for the wiring: the decoded samples of other seeds
    model = elit.load_pretrained(setup / "model")
    decoded = LatentDecoder(load_vae(str(setup / "vae")))(elit.sample(model, seeds=list(range(100, 124)), steps=2))
    compute_reference(((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), net="inception",
                      out=str(ref), progress=False)
    out = tmp_path / "rows.json"
    assert main(["eval", "--model", str(setup / "model"), "--budgets", "4", "--num", "8", "--steps", "2",
                 "--ref", str(ref), "--metrics", "fid", "--vae", str(setup / "vae"), "--json", str(out),
                 "--no-progress", "--fd-method", "eigh"]) == 0
    row = json.loads(out.read_text())[0]
    assert row["num_samples"] == 8 and np.isfinite(row["fid"])
