"""Latent-space models: `elit sample --vae` and `elit eval --vae` decode with a (tiny, random) AutoencoderKL,
and a video model's 5-D latents with a tiny AutoencoderKLCogVideoX / AutoencoderKLWan into GIF + mp4."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import elit
from elit.cli import main
from elit.vae import LatentDecoder, load_vae
from elit.video import read_frames

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


# ----------------------------------------------------------------------------- video latents
VIDEO_VAES = {   # tiny random video VAEs: 8x spatial, 4x temporal, 4 latent channels
    "cogvideox": lambda: diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=2, temporal_compression_ratio=4,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4),
    "wan": lambda: diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                              latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0]),
}
FRAMES = {"cogvideox": 8, "wan": 5}   # what 2 latent frames decode to (CogVideoX's frame batching; Wan's 1 + 4 (T - 1))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-latent")
    for name, make in VIDEO_VAES.items():
        torch.manual_seed(0)
        make().save_pretrained(root / name)
    torch.manual_seed(0)
    diffusers.AutoencoderKLWan(base_dim=8, z_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, latents_mean=[0.0] * 8,
                               latents_std=[1.0] * 8).save_pretrained(root / "wan-8ch")
    # a video DiT on 4-channel latent clips: 2 latent frames of 8x8 -> 2x4x4 tokens, 2x2x2 windows (J = 8)
    model = elit.create_model("ELIT-VideoDiT-S/2", input_size=8, frames=2, in_channels=4, num_classes=10,
                              hidden_size=32, depth=3, num_heads=4, head_depth=1, tail_depth=1, window=[2, 2, 2])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    elit.save_pretrained(model, root / "model")
    return root


def test_video_decoders_undo_their_pipelines_normalisation(video):
    z = torch.randn(2, 4, 2, 8, 8)
    wan = load_vae(str(video / "wan"))
    mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1, 1), torch.tensor([1.5, 0.5, 2.0, 1.0]).view(1, 4, 1, 1, 1)
    cog = load_vae(str(video / "cogvideox"))
    with torch.no_grad():
        expected = {"wan": wan.decode(z * std + mean).sample,                      # WanPipeline's
                    "cogvideox": cog.decode(z / cog.config.scaling_factor).sample}   # CogVideoXPipeline's
    for name, vae in (("wan", wan), ("cogvideox", cog)):
        decode = LatentDecoder(vae)
        pixels = decode(z)
        assert pixels.shape == (2, 3, FRAMES[name], 64, 64) == (2, *decode.output_shape((4, 2, 8, 8)))
        torch.testing.assert_close(pixels, expected[name], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="decodes video latents"):
            decode(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="is an AutoencoderKLWan .*image latents need an AutoencoderKL"):
        load_vae(str(video / "wan"), kind="image")


@pytest.mark.parametrize("kind", sorted(VIDEO_VAES))
def test_sample_cli_decodes_video_latents_to_gif_and_mp4(video, tmp_path, kind):
    out = tmp_path / "clips"
    assert main(["sample", "--model", str(video / "model"), "--out", str(out), "--seeds", "0-1", "--steps", "2",
                 "--budget", "4", "--vae", str(video / kind), "--grid", "--npz"]) == 0
    T = FRAMES[kind]
    for seed in (0, 1):
        assert read_frames(out / f"{seed:06d}.gif").shape == read_frames(out / f"{seed:06d}.mp4").shape == (T, 64, 64, 3)
    assert np.load(out / f"samples_2x{T}x64x64x3.npz")["arr_0"].shape == (2, T, 64, 64, 3)
    assert read_frames(out / "grid.gif").shape[0] == T
    # the GIFs are the decoded samples of their seeds (256 colours per frame: close, not exact): far
    # closer to their own seed's decoded clip than to the other's (the mp4's chroma subsampling blurs
    # a random VAE's pixel noise too much for this check; its frames are counted above)
    model = elit.load_pretrained(video / "model")
    pixels = LatentDecoder(load_vae(str(video / kind)))(elit.sample(model, seeds=[0, 1], budget=4, steps=2))
    expected = ((pixels.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 4, 1).numpy()
    clips = [read_frames(out / f"{seed:06d}.gif").astype(float) for seed in (0, 1)]
    own = max(np.abs(clips[i] - expected[i]).mean() for i in (0, 1))
    assert own < 0.25 * np.abs(clips[0] - expected[1]).mean()


def test_a_vae_that_cannot_decode_the_model_is_refused_before_any_work(setup, video, tmp_path, capsys):
    """An image VAE for a video model, a video VAE for an image model, other latent channels: one
    line naming the fix, from the VAE's config alone, before anything is sampled or written."""
    cases = [(setup / "model", video / "wan", r"samples image latents \(C, H, W\) but --vae .* is an AutoencoderKLWan, "
                                             r"a video VAE; pass an AutoencoderKL"),
             (video / "model", setup / "vae", r"samples video latents \(C, T, H, W\) but --vae .* is an AutoencoderKL, "
                                             r"an image VAE; pass an AutoencoderKLCogVideoX or AutoencoderKLWan"),
             (video / "model", video / "wan-8ch", r"samples 4-channel latents but the AutoencoderKLWan .* has 8")]
    for model, vae, message in cases:
        out, rows = tmp_path / "out", tmp_path / "rows.json"
        assert main(["sample", "--model", str(model), "--out", str(out), "--seeds", "0", "--steps", "1",
                     "--vae", str(vae)]) == 2
        assert re.search(message, capsys.readouterr().err) and not out.exists()
        assert main(["eval", "--model", str(model), "--num", "2", "--ref", str(tmp_path / "clips.npz"),
                     "--vae", str(vae), "--json", str(rows)]) == 2
        assert re.search(message, capsys.readouterr().err) and not rows.exists()
    assert main(["sample", "--model", str(video / "model"), "--out", str(out), "--seeds", "0"]) == 2
    assert "pass --vae with the video VAE (AutoencoderKLCogVideoX or AutoencoderKLWan)" in capsys.readouterr().err


class _StandInI3D(torch.nn.Module):
    """The I3D TorchScript's calling convention (not its weights): FVD's wiring without the download."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.proj(x.mean(dim=(3, 4)).transpose(1, 2)).mean(1)


def test_eval_cli_decodes_video_before_measuring(video, tmp_path):
    """Per-frame FID and FVD of decoded RGB clips (5 frames of 64x64) against reference clips of
    that shape: the reference is checked against the decoded shape, not the latents'."""
    from elit.vae import LatentDecoder
    model = elit.load_pretrained(video / "model")
    clips = LatentDecoder(load_vae(str(video / "wan")))(elit.sample(model, seeds=list(range(100, 104)), steps=2))
    ref = tmp_path / "clips.npz"
    np.savez(ref, arr_0=((clips.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy())
    i3d = tmp_path / "i3d_torchscript.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_StandInI3D()), str(i3d))
    out = tmp_path / "rows.json"
    assert main(["eval", "--model", str(video / "model"), "--budgets", "4", "--num", "4", "--steps", "2",
                 "--batch-size", "4", "--ref", str(ref), "--ref-num", "4", "--metrics", "fid,fvd", "--i3d-weights",
                 str(i3d), "--vae", str(video / "wan"), "--json", str(out), "--no-progress", "--fd-method", "eigh"]) == 0
    row = json.loads(out.read_text())[0]
    assert row["num_samples"] == 4 and np.isfinite(row["fid"]) and np.isfinite(row["fvd"])
    assert "clips of 5 frames" in row["protocols"]["fvd"]


def test_qwen_images_vae_decodes_image_latents_as_its_pipeline_does(setup, tmp_path):
    """Qwen-Image's AutoencoderKLQwenImage is an image VAE whose images are one-frame clips, its latents
    normalised per channel: decoded as QwenImagePipeline decodes (z * std + mean on a frame axis, frame 0).
    A model folder carrying it in vae/ (as a pipeline folder given with --pipeline does) needs no --vae."""
    import shutil
    mean, std = [0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 2.0, 1.0]
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                           latents_mean=mean, latents_std=std).eval()
    shutil.copytree(setup / "model", tmp_path / "model")
    vae.save_pretrained(tmp_path / "model" / "vae")
    z = torch.randn(2, 4, 8, 8)
    decode = LatentDecoder(load_vae(str(tmp_path / "model"), "vae", kind="image"))
    with torch.no_grad():
        want = vae.decode((z * torch.tensor(std).view(1, 4, 1, 1) + torch.tensor(mean).view(1, 4, 1, 1))[:, :, None])
    pixels = decode(z)
    torch.testing.assert_close(pixels, want.sample[:, :, 0], rtol=1e-5, atol=1e-5)
    assert pixels.shape == (2, 3, 64, 64) == (2, *decode.output_shape((4, 8, 8)))
    out = tmp_path / "out"
    assert main(["sample", "--model", str(tmp_path / "model"), "--out", str(out), "--seeds", "0-1", "--steps", "1",
                 "--budget", "2"]) == 0
    assert Image.open(out / "000001.png").mode == "RGB" and Image.open(out / "000001.png").size == (64, 64)
    settings = json.loads((out / "sampling.json").read_text())["settings"]
    assert (settings["vae"], settings["vae_subfolder"]) == (str(tmp_path / "model"), "vae")
