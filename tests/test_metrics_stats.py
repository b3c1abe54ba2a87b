"""Statistics, Frechet distance, reference files, precision/recall, KID, IS: no networks, fast."""
import numpy as np
import pytest

from elit.eval.metrics import scores
from elit.eval.metrics.images import as_uint8_nchw, iter_image_batches
from elit.eval.metrics.stats import (FeatureStats, RunningStats, frechet_distance, frechet_distance_features, load_stats,
                                save_stats)


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(w)) @ v.T


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_identical_stats_give_zero(method):
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(16), _spd(rng, 16)
    assert abs(frechet_distance(mu, s, mu, s, method=method)) < 1e-8


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_matches_closed_form(method):
    rng = np.random.default_rng(1)
    # Commuting (diagonal) covariances: FD = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(want, rel=1e-10)
    # General case: Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2 (the Wasserstein-2 closed form).
    s1, s2 = _spd(rng, 12), _spd(rng, 12)
    r = _psd_sqrt(s1)
    want = np.trace(s1 + s2 - 2 * _psd_sqrt(r @ s2 @ r))
    z = np.zeros(12)
    assert frechet_distance(z, s1, z, s2, method=method) == pytest.approx(want, rel=1e-8)


def test_sqrtm_and_eigh_agree_on_singular_covariances():
    rng = np.random.default_rng(2)  # fewer samples than dims, as with small FID sets
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.3
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance(*args, method="sqrtm") == pytest.approx(frechet_distance(*args, method="eigh"), rel=1e-5)


def test_frechet_from_small_feature_sets_is_exact():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((10, 40)), rng.standard_normal((13, 40)) * 1.5 + 0.2
    want = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False), method="eigh")
    assert frechet_distance_features(x, y) == pytest.approx(want, rel=1e-6)  # eigh: sqrt of ~0 eigenvalues
    assert abs(frechet_distance_features(x, x)) < 1e-9


def test_running_stats_match_numpy_with_uneven_batches():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((257, 5)) * 3 + 1000.0  # large mean: a naive sum-of-squares would lose digits
    rs = RunningStats(5)
    for lo, hi in [(0, 1), (1, 100), (100, 101), (101, 257)]:
        rs.update(x[lo:hi])
    assert rs.n == 257
    np.testing.assert_allclose(rs.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rs.cov, np.cov(x, rowvar=False), rtol=1e-9)


def test_nan_features_and_too_few_samples_raise():
    rs = RunningStats(3)
    with pytest.raises(ValueError, match="NaN"):
        rs.update(np.array([[0.0, np.nan, 1.0]]))
    rs.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_running(rs)
    rs.update(np.zeros((1, 3)))
    with pytest.warns(UserWarning, match="singular"):
        FeatureStats.from_running(rs)  # 2 samples < 3 dims: allowed, but said
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


def test_reference_file_roundtrip_and_network_mismatch(tmp_path):
    st = FeatureStats(np.arange(3.0), np.eye(3), 10, "net-a/cls", "protocol text", np.zeros((10, 3), np.float32))
    save_stats(tmp_path / "ref.npz", st)
    back = load_stats(tmp_path / "ref.npz")
    assert back.feature_net == "net-a/cls" and back.num == 10 and back.features.shape == (10, 3)
    np.testing.assert_array_equal(back.mu, st.mu)
    back.check_net("net-a/cls")
    with pytest.raises(ValueError, match="net-a/cls"):
        back.check_net("inception-v3-tf-2015-12-05/pool3/tf-bilinear-299")
    # An untagged (ADM / pytorch-fid style) file is only accepted as Inception pool3 statistics.
    np.savez(tmp_path / "adm.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    adm = load_stats(tmp_path / "adm.npz")
    with pytest.raises(ValueError, match="no `feature_net` tag"):
        adm.check_net("fmnist-cnn@abc/penultimate")
    with pytest.warns(UserWarning, match="assuming TF-Inception"):
        adm.check_net("inception-v3-tf-2015-12-05/pool3/tf-bilinear-299")


def test_precision_recall_and_kid():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((300, 8))
    assert scores.precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = scores.precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0
    # Fakes collapsed around one real point (mode collapse): full precision, almost no recall.
    p, r = scores.precision_recall(real, real[:1] + 0.01 * rng.standard_normal((30, 8)))
    assert p == 1.0 and r < 0.05
    same, _ = scores.kid(real, rng.standard_normal((300, 8)), num_subsets=10, subset_size=100)
    shifted, _ = scores.kid(real, rng.standard_normal((300, 8)) + 1.0, num_subsets=10, subset_size=100)
    assert abs(same) < 0.3 and shifted > 3.0  # unbiased estimate: near 0 (either sign) vs ~9


def test_inception_score_from_logits():
    # Confident, evenly spread predictions over 10 classes: IS = 10. Uniform predictions: IS = 1.
    logits = np.tile(np.eye(10) * 50.0, (10, 1))
    assert scores.inception_score(logits, splits=2)[0] == pytest.approx(10.0, rel=1e-6)
    assert scores.inception_score(np.zeros((20, 10)), splits=2)[0] == pytest.approx(1.0)


def test_image_layouts_and_bad_inputs(tmp_path):
    from PIL import Image
    x = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    nchw = as_uint8_nchw(x)
    assert nchw.shape == (4, 3, 8, 8)
    assert as_uint8_nchw(nchw).shape == (4, 3, 8, 8)
    assert as_uint8_nchw(x[..., 0]).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        as_uint8_nchw(x.astype(np.float32))
    with pytest.raises(ValueError, match="channels"):
        as_uint8_nchw(np.zeros((2, 4, 8, 8), np.uint8))
    # ADM-style .npz batch streams in slices and round-trips exactly.
    np.savez(tmp_path / "samples.npz", arr_0=x)
    got = np.concatenate([b.permute(0, 2, 3, 1).numpy() for b in iter_image_batches(tmp_path / "samples.npz", 3)])
    np.testing.assert_array_equal(got, x)
    # Folders with mixed sizes or modes are refused, naming the file.
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(x[0]).save(d / "a.png")
    Image.fromarray(x[1, :4, :4]).save(d / "b.png")
    with pytest.raises(ValueError, match="b.png"):
        list(iter_image_batches(d, 8))
    (d / "b.png").unlink()
    Image.fromarray(x[1, :, :, 0]).save(d / "c.png")
    with pytest.raises(ValueError, match="c.png"):
        list(iter_image_batches(d, 8))
