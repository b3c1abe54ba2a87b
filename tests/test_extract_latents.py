"""`elit extract-latents` against a tiny randomly initialised diffusers AutoencoderKL (offline)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elit.cli import main
from elit.data import ImageFolder, LatentShardDataset
from elit.data import latents as latents_mod

diffusers = pytest.importorskip("diffusers")


def _tiny_vae(path: Path, **config):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32, **config)
    vae.save_pretrained(path)
    return vae.eval()


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for i, (h, w) in enumerate([(40, 50), (32, 32), (70, 36), (33, 90), (64, 64)] * 2):
        d = root / ("b_class" if i % 2 else "a_class")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    return root


def _extract(vae_dir, images, out, *extra):
    return main(["extract-latents", "--vae", str(vae_dir), "--data", str(images), "--out", str(out),
                 "--image-size", "32", "--device", "cpu", *extra])


def test_extract_matches_direct_encoding(tmp_path, images):
    vae = _tiny_vae(tmp_path / "vae")
    out = tmp_path / "lat"
    assert _extract(tmp_path / "vae", images, out, "--batch-size", "3", "--shard-size", "4",
                    "--save-dtype", "float32") == 0
    data = ImageFolder(images, image_size=32)
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    ds = LatentShardDataset(out)
    assert len(ds) == 10 and ds.image_shape == (4, 16, 16) and ds.num_classes == 2
    assert ds.class_names == ["a_class", "b_class"] and ds.scaling_factor == pytest.approx(0.18215)
    got = torch.stack([ds[i][0] for i in range(10)])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert [int(ds[i][1]) for i in range(10)] == data.labels
    index = json.loads((out / "index.json").read_text())
    assert [s["num_items"] for s in index["shards"]] == [4, 4, 2] and index["dtype"] == "float32"
    assert not list(out.glob("*.tmp")) and not (out / "progress.json").exists()
    # a finished folder, or a foreign non-empty one, is refused with a clean error (exit 2)
    assert _extract(tmp_path / "vae", images, out) == 2
    assert _extract(tmp_path / "vae", images, images) == 2
    assert _extract(tmp_path / "no_vae", images, tmp_path / "lat2") == 2


def test_extract_resumes_after_failure(tmp_path, images, monkeypatch):
    _tiny_vae(tmp_path / "vae", shift_factor=0.25)
    args = ("--batch-size", "3", "--shard-size", "4")
    assert _extract(tmp_path / "vae", images, tmp_path / "ref", *args) == 0
    # interrupt a second run after its two full shards are written (before the last one and index.json)
    real_finish = latents_mod.LatentShardWriter.finish
    monkeypatch.setattr(latents_mod.LatentShardWriter, "finish", lambda self, meta: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _extract(tmp_path / "vae", images, tmp_path / "run", *args)
    monkeypatch.setattr(latents_mod.LatentShardWriter, "finish", real_finish)
    run = tmp_path / "run"
    assert not (run / "index.json").exists() and (run / "progress.json").exists()
    first_shard = (run / "shard-00000.safetensors").stat().st_mtime_ns
    assert _extract(tmp_path / "vae", images, run, "--batch-size", "4", "--shard-size", "5") == 2  # other settings
    assert _extract(tmp_path / "vae", images, run, *args) == 0
    assert (run / "shard-00000.safetensors").stat().st_mtime_ns == first_shard  # not re-encoded
    ref, got = LatentShardDataset(tmp_path / "ref"), LatentShardDataset(run)
    assert ref.shift_factor == 0.25
    assert all(torch.equal(ref[i][0], got[i][0]) for i in range(8))  # the kept shards
    # the rest was encoded in other batches ([8, 9] instead of [6, 7, 8], [9]): equal up to float noise
    assert all(torch.allclose(ref[i][0], got[i][0], atol=1e-4) for i in range(8, 10))
    # shift_factor is subtracted before scaling; stored as float16 by default
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae")
    with torch.no_grad():
        mean = vae.encode(ImageFolder(images, 32)[3][0][None]).latent_dist.mean[0]
    assert torch.allclose(ref[3][0], (mean - 0.25) * vae.config.scaling_factor, atol=2e-3)


def test_extract_sample_is_per_image(tmp_path, images):
    vae = _tiny_vae(tmp_path / "vae")
    assert _extract(tmp_path / "vae", images, tmp_path / "s3", "--sample", "--batch-size", "3") == 0
    assert _extract(tmp_path / "vae", images, tmp_path / "s5", "--sample", "--batch-size", "5") == 0
    a, b = LatentShardDataset(tmp_path / "s3"), LatentShardDataset(tmp_path / "s5")
    # batch size does not matter (up to float noise from the batched convolutions)
    assert all(torch.allclose(a[i][0], b[i][0], atol=1e-4) for i in range(10))
    with torch.no_grad():
        dist = vae.encode(ImageFolder(images, 32)[0][0][None]).latent_dist
    noise = (a[0][0] / vae.config.scaling_factor - dist.mean[0]) / dist.std[0]
    assert 0.7 < noise.std() < 1.3 and abs(noise.mean()) < 0.2  # a real N(0, 1) sample, not the mean


def test_video_clips_encode_with_a_tiny_cogvideox_vae(tmp_path):
    """--video: clips of a video folder through a (random, tiny) AutoencoderKLCogVideoX, the paper's
    video VAE; the shards hold (C, T', h, w) latents that a video DiT trains on."""
    from elit.data.video_folder import VideoFolder
    from elit.video import save_mp4
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=2, temporal_compression_ratio=4,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4)
    vae.save_pretrained(tmp_path / "vae")
    rng = np.random.default_rng(1)
    (tmp_path / "videos").mkdir()
    for i in range(2):
        save_mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8), tmp_path / "videos" / f"{i}.mp4")
    out = tmp_path / "latents"
    assert main(["extract-latents", "--video", "--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "videos"),
                 "--out", str(out), "--frames", "9", "--image-size", "64", "--device", "cpu",
                 "--batch-size", "2"]) == 0
    data = LatentShardDataset(out)
    assert data.image_shape == (4, 3, 8, 8) and len(data) == 2       # 9 frames -> 3 latent frames, 64 -> 8
    clip, _ = VideoFolder(tmp_path / "videos", frames=9, size=64)[1]
    with torch.no_grad():
        direct = vae.eval().encode(clip[None]).latent_dist.mean * vae.config.scaling_factor
    assert torch.allclose(data[1][0].float(), direct[0], atol=2e-2)  # stored as float16


def test_the_vae_kind_is_read_from_its_folder_and_checked_before_any_work(tmp_path, images, capsys):
    """An image VAE with --video, a video VAE without it, and Wan's per-channel normalisation (which
    the shards cannot record yet) are refused in one line, before the data are read or --out made."""
    _tiny_vae(tmp_path / "image-vae")
    torch.manual_seed(0)
    diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, latents_mean=[0.0] * 4,
                               latents_std=[1.0] * 4).save_pretrained(tmp_path / "wan-vae")
    diffusers.AutoencoderKLCogVideoX(block_out_channels=(8, 8), latent_channels=4, norm_num_groups=2,
                                     down_block_types=("CogVideoXDownBlock3D",) * 2,
                                     up_block_types=("CogVideoXUpBlock3D",) * 2).save_pretrained(tmp_path / "cog-vae")
    cases = [("image-vae", ["--video"], "is an AutoencoderKL, an image VAE; --video needs an AutoencoderKLCogVideoX"),
             ("cog-vae", [], "is an AutoencoderKLCogVideoX, a video VAE; add --video to encode a video folder"),
             ("wan-vae", ["--video"], "an AutoencoderKLWan normalises per channel")]
    for vae, extra, message in cases:
        assert _extract(tmp_path / vae, tmp_path / "no-such-data", tmp_path / "lat", *extra) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "lat").exists()
