"""Tests for elit.data: Fashion-MNIST parsing, image folder, latent shards, sampler and loader."""
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elit.data import (FashionMNIST, ImageFolder, InfiniteLoader, LatentShardDataset, LatentShardWriter,
                       ResumableSampler, build_dataset, load_fashion_mnist)
from elit.data.fashion_mnist import missing_files
from elit.data.seeding import EpochFlipMixin

from conftest import needs_fmnist

FMNIST = missing_files()[0]     # the folder the loader reads (ELIT_FMNIST_ROOT or the Debian package's)


# ---------------------------------------------------------------- Fashion-MNIST
@needs_fmnist
def test_fmnist_real_files():
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_fashion_mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        # Fashion-MNIST is balanced: n/10 images of each of the 10 classes.
        assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n // 10))
        assert x.float().mean() > 40  # real pictures, not zeros (mean pixel is about 73)
    ds = FashionMNIST("test")
    assert len(ds) == 10000 and ds.num_classes == 10 and ds.image_shape == (1, 32, 32)
    xs, ys = zip(*(ds[i] for i in range(0, 10000, 997)))
    x = torch.stack(xs)
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 32, 32)
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.9
    # 2 px of background on each side; the middle is the raw image rescaled.
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, 0][:, border] == -1).all()
    raw, labels = load_fashion_mnist("test")
    assert torch.allclose(x[1, 0, 2:30, 2:30], raw[997].float() / 127.5 - 1)
    assert ys[1] == labels[997] and ys[1].dtype == torch.int64


def _copy_test_split(dst: Path, gz: bool = True) -> Path:
    dst.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        packed = FMNIST / f"{name}.gz"
        data = gzip.decompress(packed.read_bytes()) if packed.is_file() else (FMNIST / name).read_bytes()
        if gz:
            (dst / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (dst / name).write_bytes(data)
    return dst


@needs_fmnist
def test_fmnist_uncompressed_and_env_root(tmp_path, monkeypatch):
    folder = _copy_test_split(tmp_path / "raw", gz=False)
    monkeypatch.setenv("ELIT_FMNIST_ROOT", str(folder))
    x, y = load_fashion_mnist("test")
    x0, y0 = load_fashion_mnist("test", root=str(FMNIST))
    assert torch.equal(x, x0) and torch.equal(y, y0)


@needs_fmnist
def test_fmnist_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist("test", root=str(empty))
    # truncated gzip stream
    a = _copy_test_split(tmp_path / "a")
    f = a / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist("test", root=str(a))
    # bytes zeroed inside the gzip stream
    d = _copy_test_split(tmp_path / "d")
    f = d / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:1000] + bytes(100) + f.read_bytes()[1100:])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist("test", root=str(d))
    # uncompressed file cut short: size does not match the header
    b = _copy_test_split(tmp_path / "b", gz=False)
    f = b / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-28])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist("test", root=str(b))
    # labels file given where images are expected: wrong magic number
    c = _copy_test_split(tmp_path / "c", gz=False)
    shutil.copy(c / "t10k-labels-idx1-ubyte", c / "t10k-images-idx3-ubyte")
    with pytest.raises(ValueError, match="magic"):
        load_fashion_mnist("test", root=str(c))
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val")


# ---------------------------------------------------------------- image folder
def _save(path: Path, arr: np.ndarray, mode: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def _make_folder(root: Path):
    rng = np.random.default_rng(0)
    # wide image: three vertical thirds red / green / blue, 48x16 -> centre crop 16 is the green third
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16, 0], wide[:, 16:32, 1], wide[:, 32:, 2] = 255, 255, 255
    _save(root / "dog" / "wide.png", wide)
    _save(root / "cat" / "gray.jpg", rng.integers(0, 255, (70, 100), dtype=np.uint8))  # grayscale JPEG
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 100  # red, half transparent
    _save(root / "cat" / "rgba.png", rgba, "RGBA")
    _save(root / "dog" / "sub" / "noise.png", rng.integers(0, 255, (40, 33, 3), dtype=np.uint8))
    _save(root / "dog" / "big_solid.png", np.full((64, 80, 3), (10, 120, 240), np.uint8))


def test_image_folder_layout_crop_and_rgb(tmp_path):
    _make_folder(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2 and ds.image_shape == (3, 16, 16)
    names = [p.name for p in ds.files]
    assert names == ["gray.jpg", "rgba.png", "big_solid.png", "noise.png", "wide.png"]
    assert ds.labels == [0, 0, 1, 1, 1]
    items = {n: ds[i] for i, n in enumerate(names)}
    for x, y in items.values():
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        assert y.dtype == torch.int64
    g = items["gray.jpg"][0]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # grayscale -> equal RGB channels
    r = items["rgba.png"][0]  # alpha dropped, colour kept
    assert torch.allclose(r[:, 8, 8], torch.tensor([200, 0, 0]) / 127.5 - 1)
    w = items["wide.png"][0]  # centre crop of the 48x16 image is the pure green third
    assert torch.allclose(w[:, :, 2:14], torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand(3, 16, 12))
    # 80x64 solid image: BOX halving (64 >= 32) then bicubic to 16: colour exactly preserved
    b = items["big_solid.png"][0]
    assert torch.allclose(b, (torch.tensor([10, 120, 240]) / 127.5 - 1)[:, None, None].expand(3, 16, 16), atol=1e-6)


def test_image_folder_flip_deterministic(tmp_path):
    _make_folder(tmp_path)
    plain = ImageFolder(tmp_path, image_size=16)
    a, b = ImageFolder(tmp_path, 16, flip=True, seed=3), ImageFolder(tmp_path, 16, flip=True, seed=3)
    decisions = []
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in reversed(range(len(a))):  # access order does not matter
            xa, xb, x0 = a[i][0], b[i][0], plain[i][0]
            assert torch.equal(xa, xb)
            flipped = torch.equal(xa, x0.flip(-1)) and not torch.equal(xa, x0)
            assert flipped or torch.equal(xa, x0)
            if i in (0, 3):  # the other three images are left-right symmetric
                decisions.append(flipped)
    d = decisions
    assert 0.2 < sum(d) / len(d) < 0.8  # both outcomes occur, about half each
    c = ImageFolder(tmp_path, 16, flip=True, seed=4)
    differ = []
    for epoch in range(8):
        a.set_epoch(epoch)
        c.set_epoch(epoch)
        differ += [not torch.equal(c[i][0], a[i][0]) for i in (0, 3)]
    assert any(differ)  # the seed matters


def test_image_folder_errors_and_flat(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path)
    _save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    ds = ImageFolder(tmp_path, image_size=8)
    assert ds.num_classes == 1 and ds.unconditional and ds.labels == [0, 0]
    assert ds[0][1] == 0
    with pytest.raises(ValueError, match="broken.jpg"):
        ds[1]
    _save(tmp_path / "cls" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="mixes"):
        ImageFolder(tmp_path)


# ---------------------------------------------------------------- latent shards
def _write_latents(root: Path, n=12, shard=5, batch=4, settings=None):
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(n, 4, 2, 3, generator=g), torch.randint(0, 3, (n,), generator=g)
    w = LatentShardWriter(root, settings or {"k": 1}, shard)
    for i in range(0, n, batch):
        w.add(z[i: i + batch], y[i: i + batch])
    w.finish({"vae": "tiny", "scaling_factor": 0.5, "shift_factor": None, "image_size": 8,
              "class_names": ["a", "b", "c"], "num_classes": 3})
    return z, y


def test_latent_shards_round_trip(tmp_path):
    z, y = _write_latents(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert [s["num_items"] for s in index["shards"]] == [5, 5, 2] and index["latent_shape"] == [4, 2, 3]
    ds = build_dataset({"name": "latents", "root": str(tmp_path)})
    assert len(ds) == 12 and ds.num_classes == 3 and ds.image_shape == (4, 2, 3) and ds.scaling_factor == 0.5
    for i in range(12):
        zi, yi = ds[i]
        assert zi.dtype == torch.float32 and torch.equal(zi, z[i]) and yi == y[i] and yi.dtype == torch.int64
    with pytest.raises(IndexError):
        ds[12]
    # open shard handles are not pickled: DataLoader workers reopen them
    batches = list(torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), z) and torch.equal(torch.cat([b[1] for b in batches]), y)
    flip = LatentShardDataset(tmp_path, flip=True, seed=1)
    outcomes = {torch.equal(flip[i][0], z[i].flip(-1)) for i in range(12)}
    assert outcomes == {True, False}
    assert all(torch.equal(flip[i][0], z[i]) or torch.equal(flip[i][0], z[i].flip(-1)) for i in range(12))


def test_latent_writer_refusals_and_resume(tmp_path):
    _write_latents(tmp_path / "done")
    with pytest.raises(ValueError, match="finished"):
        LatentShardWriter(tmp_path / "done", {"k": 1}, 5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="not empty"):
        LatentShardWriter(tmp_path / "other", {"k": 1}, 5)
    # an interrupted extraction: two shards written, no index
    w = LatentShardWriter(tmp_path / "part", {"k": 1}, 2)
    w.add(torch.zeros(5, 1, 1, 1), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        LatentShardDataset(tmp_path / "part")
    with pytest.raises(ValueError, match="differs in: k"):
        LatentShardWriter(tmp_path / "part", {"k": 2}, 2)
    w2 = LatentShardWriter(tmp_path / "part", {"k": 1}, 2)
    assert w2.num_done == 4


# ---------------------------------------------------------------- sampler and loader
def test_sampler_epochs_and_rank_sharding():
    n, k, b = 50, 3, 4
    one = ResumableSampler(n, k * b, seed=7, rank=0, world_size=1)
    ranks = [ResumableSampler(n, b, seed=7, rank=r, world_size=k) for r in range(k)]
    for epoch in range(2):
        single = one.batches(epoch)
        per_rank = [s.batches(epoch) for s in ranks]
        assert len(single) == n // (k * b) and all(len(p) == len(single) for p in per_rank)
        for j, batch in enumerate(single):
            for r in range(k):  # rank r holds items r, r+K, ... of the global batch
                assert per_rank[r][j] == batch[r::k]
    e0, e1 = one.epoch_order(0), one.epoch_order(1)
    assert sorted(e0.tolist()) == list(range(n)) and not torch.equal(e0, e1)
    assert torch.equal(e0, ResumableSampler(n, 5, seed=7).epoch_order(0))
    assert not torch.equal(e0, ResumableSampler(n, 5, seed=8).epoch_order(0))
    # drop_last=False: every item seen, ranks get equal counts
    ev = [ResumableSampler(n, b, rank=r, world_size=k, drop_last=False, shuffle=False) for r in range(k)]
    seen = [i for s in ev for batch in s.batches(0) for i in batch]
    assert set(seen) == set(range(n)) and len(seen) == 51
    assert len({sum(map(len, s.batches(0))) for s in ev}) == 1


class _Items(EpochFlipMixin, torch.utils.data.Dataset):
    """Item i -> (i, flip decision), to see both the order and the flips."""

    def __init__(self, n):
        self.n, self.flip, self.seed = n, True, 5

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i), torch.tensor(self._should_flip(i))


def _take(loader, count):
    it = iter(loader)
    return [tuple(t.tolist() for t in next(it)) for _ in range(count)]


def test_loader_resumes_exactly():
    rng_before = torch.get_rng_state()
    full = _take(InfiniteLoader(_Items(20), ResumableSampler(20, 3, seed=1)), 17)  # 6 batches/epoch
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never drawn from
    assert full[0] != full[6]  # a new permutation in epoch 1
    first = InfiniteLoader(_Items(20), ResumableSampler(20, 3, seed=1), num_workers=2)  # workers prefetch
    assert _take(first, 7) == full[:7]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint round trip
    assert (state["epoch"], state["position"]) == (1, 1)
    resumed = InfiniteLoader(_Items(20), ResumableSampler(20, 3, seed=1))
    resumed.load_state_dict(state)
    assert _take(resumed, 10) == full[7:17]
    # resuming on 2 ranks with the same global batch (2 x 3 = 6) continues the same global order
    one = InfiniteLoader(_Items(20), ResumableSampler(20, 6, seed=1))
    ref = _take(one, 5)
    two = [InfiniteLoader(_Items(20), ResumableSampler(20, 3, seed=1, rank=r, world_size=2)) for r in range(2)]
    s = ResumableSampler(20, 6, seed=1)
    s.position = 2
    for loader in two:
        loader.load_state_dict(s.state_dict())
    got = [_take(loader, 3) for loader in two]
    for j in range(3):
        assert sorted(got[0][j][0] + got[1][j][0]) == sorted(ref[2 + j][0])
    with pytest.raises(ValueError, match="seed"):
        ResumableSampler(20, 3, seed=2).load_state_dict(state)


def test_build_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="valid names: fmnist, moving-fmnist, folder, video-folder, latents"):
        build_dataset({"name": "imagenet"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_dataset({"name": "folder", "root": str(tmp_path), "imagesize": 64})
    with pytest.raises(ValueError, match="root"):
        build_dataset({"name": "latents"})
    _save(tmp_path / "c0" / "a.png", np.zeros((9, 9, 3), np.uint8))
    ds = build_dataset({"name": "folder", "root": str(tmp_path), "image_size": 8, "flip": True})
    assert ds.image_shape == (3, 8, 8) and ds.num_classes == 1 and ds.flip


def test_center_crop_box_filter():
    from elit.data import center_crop_arr
    # 1-px checkerboard: BOX halving averages it to mid-grey; any point sampling would keep 0 / 255
    board = ((np.indices((64, 96)).sum(0) % 2) * 255).astype(np.uint8)
    out = center_crop_arr(Image.fromarray(board).convert("RGB"), 16)
    assert out.shape == (16, 16, 3) and np.abs(out.astype(float) - 127.5).max() <= 1


def test_synthetic_dataset_is_deterministic_and_checked():
    from elit.data import build_dataset
    ds = build_dataset({"name": "synthetic", "shape": [4, 8, 8], "num_classes": 7, "size": 20, "seed": 3})
    again = build_dataset({"name": "synthetic", "shape": [4, 8, 8], "num_classes": 7, "size": 20, "seed": 3})
    other = build_dataset({"name": "synthetic", "shape": [4, 8, 8], "num_classes": 7, "size": 20, "seed": 4})
    x, y = ds[9]
    assert len(ds) == 20 and ds.image_shape == (4, 8, 8) and x.shape == (4, 8, 8) and int(y) == 9 % 7
    assert torch.equal(x, again[9][0]) and not torch.equal(x, other[9][0]) and not torch.equal(x, ds[8][0])
    with pytest.raises(ValueError, match="shape"):
        build_dataset({"name": "synthetic", "shape": [4, 8]})
