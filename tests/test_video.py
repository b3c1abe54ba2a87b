"""Video end to end: moving Fashion-MNIST clips, training a tiny video model, `elit sample` writing
playable GIF and mp4 files, and `elit eval` with per-frame, temporal and FVD metrics."""
import json

import numpy as np
import pytest
import torch

import elit
from elit.cli import main
from elit.data import build_dataset
from elit.data.moving_fmnist import bounce
from elit.video import read_frames

TINY_VIDEO = dict(input_size=32, frames=4, in_channels=1, num_classes=10, patch_size=4, hidden_size=32,
                  num_heads=4, depth=3, head_depth=1, tail_depth=1, window=[2, 4, 4])


def tiny_video_model(tmp_path):
    torch.manual_seed(0)
    model = elit.create_model("ELIT-VideoDiT-S/2", **TINY_VIDEO)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return elit.save_pretrained(model, tmp_path / "video-model"), model


def test_bounce_reflects_at_both_walls():
    assert bounce(0, 3, 6, 5) == [0, 3, 4, 1, 2, 5]
    assert bounce(4, -2, 4, 4) == [4, 2, 0, 2]
    assert bounce(2, 5, 3, 0) == [0, 0, 0]


def test_moving_fmnist_clips_are_deterministic_and_move():
    data = build_dataset({"name": "moving-fmnist", "split": "test", "frames": 6, "length": 50})
    assert data.image_shape == (1, 6, 32, 32) and len(data) == 50
    x, y = data[7]
    again, y2 = build_dataset({"name": "moving-fmnist", "split": "test", "frames": 6, "length": 50})[7]
    assert torch.equal(x, again) and y == y2 and 0 <= int(y) < 10
    assert x.min() == -1 and x.max() > 0                       # an item on a black canvas
    lit = (x[0] > -1).float()                                  # where the item is, frame by frame
    centres = [(lit[k].nonzero().float().mean(0)) for k in range(6)]
    assert max((centres[k + 1] - centres[k]).abs().max() for k in range(5)) > 0.5    # it moves
    item, _, _ = data.clip_params(7)
    assert int(y) == int(data.labels[item])
    with pytest.raises(ValueError, match="item_size"):
        build_dataset({"name": "moving-fmnist", "item_size": 40})


def test_training_a_video_model_runs_and_exports(tmp_path):
    overrides = [f"model.{k}={json.dumps(v)}" for k, v in TINY_VIDEO.items()] + [
        "model.backbone=video-dit", "data.name=moving-fmnist", "data.frames=4", "train.max_steps=3",
        "train.global_batch_size=4", "log.ckpt_every=3", "log.sample_steps=2", "log.sample_per_row=3",
        "log.sample_budgets=[2,32]", "log.progress=false"]
    assert main(["train", "--config", "fmnist-elit-dit", "--out", str(tmp_path / "run"), *overrides]) == 0
    model = elit.load_pretrained(tmp_path / "run" / "model")
    assert model.sample_shape() == (1, 4, 32, 32) and model.budgets == list(range(1, 33))   # min_budget 1 from the base config
    grids = list((tmp_path / "run" / "samples").iterdir())
    assert {p.suffix for p in grids} == {".png", ".gif"}
    # a clip-shaped model refuses image data with a message saying so
    bad = [o for o in overrides if not o.startswith("data.")] + ["data.name=fmnist"]
    assert main(["train", "--config", "fmnist-elit-dit", "--out", str(tmp_path / "bad"), *bad]) == 2


def test_sample_writes_playable_gif_and_mp4(tmp_path):
    model_dir, model = tiny_video_model(tmp_path)
    out = tmp_path / "clips"
    assert main(["sample", "--model", str(model_dir), "--budget", "8", "--seeds", "0-9", "--steps", "2",
                 "--out", str(out), "--grid", "--npz"]) == 0
    for seed in range(10):
        gif, mp4 = read_frames(out / f"{seed:06d}.gif"), read_frames(out / f"{seed:06d}.mp4")
        assert gif.shape == (4, 32, 32, 3) and mp4.shape[0] == 4
    expected = elit.sample(model, range(3), budget=8, steps=2)
    pixels = ((expected[0, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(read_frames(out / "000000.gif")[..., 0], pixels)        # GIF frames are lossless
    assert (out / "grid.png").is_file() and read_frames(out / "grid.gif").shape[0] == 4
    assert np.load(out / "samples_10x4x32x32x1.npz")["arr_0"].shape == (10, 4, 32, 32, 1)


def test_a_gif_with_still_stretches_reads_back_every_frame(tmp_path):
    """Pillow merges a frame equal to the one before (a still scene, a VAE that repeats frames) into
    one longer frame; read_frames splits it again, so a clip keeps its frame count."""
    from elit.video import save_gif
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    clip = a[[0, 0, 1, 2, 2, 2]]
    for fps in (4.0, 8.0, 3.0):     # 333 ms is stored as 33 centiseconds
        save_gif(clip, tmp_path / "c.gif", fps=fps)
        assert np.array_equal(read_frames(tmp_path / "c.gif")[..., 0], clip[..., 0])
    save_gif(a[[1] * 4], tmp_path / "still.gif")
    assert read_frames(tmp_path / "still.gif").shape == (4, 16, 16, 3)


def test_eval_measures_clips_per_frame_and_over_time(tmp_path, capsys):
    model_dir, _ = tiny_video_model(tmp_path)
    rows_path = tmp_path / "rows.json"
    assert main(["eval", "--model", str(model_dir), "--budgets", "2,32", "--num", "16", "--steps", "2",
                 "--batch-size", "8", "--ref", "moving-fmnist-test", "--ref-num", "40", "--no-progress",
                 "--metrics", "fd_fmnist,fd_fmnist_clip,class_consistency,label_accuracy", "--json",
                 str(rows_path)]) == 0
    rows = json.loads(rows_path.read_text())
    assert [r["latents_per_group"] for r in rows] == [2, 32]
    for r in rows:
        assert r["num_samples"] == 16 and r["fd_fmnist"] > 0 and r["fd_fmnist_clip"] > 0
        assert 0 <= r["class_consistency"] <= 1 and 0 <= r["label_accuracy"] <= 1
    assert main(["eval", "--model", str(model_dir), "--num", "4", "--ref", "moving-fmnist-test",
                 "--metrics", "fvd", "--budgets", "2"]) == 2
    assert "i3d" in capsys.readouterr().err.lower()


class _StandInI3D(torch.nn.Module):
    """A scripted network with the I3D TorchScript's calling convention (not its weights)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.proj(x.mean(dim=(3, 4)).transpose(1, 2)).mean(1)


def test_fvd_calls_a_torchscript_i3d_and_compares_features(tmp_path):
    from elit.eval.metrics.stats import frechet_distance
    from elit.eval.video import I3DFeatures
    torch.manual_seed(0)
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_StandInI3D()), str(path))
    i3d = I3DFeatures(path)
    clips = torch.randint(0, 256, (6, 1, 4, 32, 32), dtype=torch.uint8)
    feats = i3d(clips)
    assert feats.shape == (6, 400) and np.isfinite(feats).all()
    # the Frechet part on random features: zero against itself, grows with a shift of the mean
    g = np.random.default_rng(0)
    a, b = g.normal(size=(500, 8)), g.normal(size=(500, 8)) + 0.5
    mu = lambda f: f.mean(0)                       # noqa: E731
    cov = lambda f: np.cov(f, rowvar=False)        # noqa: E731
    assert frechet_distance(mu(a), cov(a), mu(a), cov(a)) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(mu(a), cov(a), mu(b), cov(b)) == pytest.approx(8 * 0.25, rel=0.3)
    with pytest.raises(FileNotFoundError, match="i3d"):
        I3DFeatures(tmp_path / "missing.pt")


def _write_video(path, frames, size=40, fps=8):
    from elit.video import save_mp4
    rng = np.random.default_rng(len(str(path)))
    save_mp4(rng.integers(0, 256, (frames, size, size + 8, 3), dtype=np.uint8), path, fps=fps)


def test_video_folder_cuts_clips_and_refuses_bad_files(tmp_path):
    from elit.data import VideoFolder
    for cls, n in (("cats", 9), ("dogs", 4)):
        (tmp_path / "v" / cls).mkdir(parents=True)
        _write_video(tmp_path / "v" / cls / "a.mp4", n)
    data = VideoFolder(tmp_path / "v", frames=2, size=32, stride=2)
    assert data.class_names == ["cats", "dogs"] and data.image_shape == (3, 2, 32, 32)
    assert [(c[0].parent.name, c[1]) for c in data.clips] == [("cats", 0), ("cats", 4), ("dogs", 0)]
    x, y = data[1]
    assert x.shape == (3, 2, 32, 32) and int(y) == 0 and -1 <= x.min() < x.max() <= 1
    short = tmp_path / "short"
    short.mkdir()
    _write_video(short / "tiny.mp4", 2)
    with pytest.raises(ValueError, match=r"tiny\.mp4 has 2 frames"):
        VideoFolder(short, frames=4)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.webm").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"bad\.webm"):
        VideoFolder(broken, frames=2)
