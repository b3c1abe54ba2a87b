"""Issue 19.3: reference statistics of fmnist-test/-train are computed once per (split, network,
count) and then read from the user cache; the progress bar knows its total (so it shows an ETA)."""
import numpy as np
import pytest
import torch
from PIL import Image

from elit.cli import main
from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics.compute import compute_reference, get_extractor
from elit.eval.metrics.images import count_images
from elit.eval.metrics.ref_cache import cache_dir
from test_train import needs_fmnist


class Counting(FeatureExtractor):
    """The shipped Fashion-MNIST network, counting the images it is shown."""

    def __init__(self, inner):
        super().__init__(batch_size=256)
        self.inner, self.net = inner, inner.net
        self.name, self.protocol, self.dim = inner.name, inner.protocol, inner.dim
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner.forward(x)


@needs_fmnist
def test_named_references_are_computed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ELIT_CACHE_DIR", str(tmp_path / "cache"))
    ext = Counting(get_extractor("fmnist"))   # its own network copy: the weights are changed below
    first = compute_reference("fmnist-test", "fmnist", num=64, extractor=ext, progress=False)
    assert ext.seen == 64 and len(list(cache_dir().glob("fmnist-test-fmnist-cnn-64-*.npz"))) == 1
    again = compute_reference("fmnist-test", "fmnist", num=64, extractor=ext, progress=False)
    assert ext.seen == 64                                            # read back, not recomputed
    assert np.array_equal(first.mu, again.mu) and np.array_equal(first.sigma, again.sigma) and again.num == 64
    compute_reference("fmnist-test", "fmnist", num=32, extractor=ext, progress=False)
    assert ext.seen == 96                                            # another count is another entry
    with torch.no_grad():                                            # other weights: another entry
        ext.net.fc.bias.add_(1.0)
    ext._elit_weights_digest = None
    compute_reference("fmnist-test", "fmnist", num=32, extractor=ext, progress=False)
    assert ext.seen == 128


@needs_fmnist
def test_folders_are_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ELIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(folder / f"{i}.png")
    ext = Counting(get_extractor("fmnist"))
    for _ in range(2):
        compute_reference(str(folder), "fmnist", extractor=ext, progress=False)
    assert ext.seen == 8 and not cache_dir().exists()


@needs_fmnist
def test_cli_ref_says_it_used_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ELIT_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["ref", "--data", "fmnist-test", "--num", "40", "--metric-net", "fmnist"]
    assert main(argv + ["--out", str(tmp_path / "a.npz")]) == 0
    assert "cached" not in capsys.readouterr().err
    assert main(argv + ["--out", str(tmp_path / "b.npz")]) == 0
    assert "statistics cached in" in capsys.readouterr().err
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["sigma"], b["sigma"])


def test_progress_totals_are_known_before_reading(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"{i}.png")
    np.savez(tmp_path / "batch.npz", arr_0=np.zeros((7, 8, 8, 1), np.uint8))
    assert count_images(str(folder)) == 5 and count_images(str(folder), 3) == 3
    assert count_images(str(tmp_path / "batch.npz")) == 7
    assert count_images("fmnist-test") == 10000 and count_images("fmnist-train", 100) == 100
    assert count_images(np.zeros((6, 8, 8), np.uint8)) == 6
    assert count_images(iter([]), 9) == 9 and count_images(iter([])) is None


@pytest.mark.parametrize("num", [0, -5, 2.5, True])
def test_counts_that_are_not_counts_are_refused(num):
    from elit.eval.metrics.images import iter_image_batches
    with pytest.raises(ValueError, match="whole number >= 1"):
        list(iter_image_batches(np.zeros((20, 8, 8), np.uint8), 4, num))
