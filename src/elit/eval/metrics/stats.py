"""Feature statistics: streaming mean/covariance, the Frechet distance, reference `.npz` files.

Reference files are ADM-compatible (`mu`, `sigma` at the top level, as ADM's evaluator and
pytorch-fid write them) plus `feature_net` (which network *and* preprocessing made them) and
`protocol` (the same in words), so that a reference made with another network is refused instead of
giving a silently wrong number.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from elit._io import atomic_write
from elit.errors import MissingInputError, UserError

# Networks whose statistics third-party reference files (ADM, pytorch-fid) hold under bare
# `mu`/`sigma`: the TF Inception-v3 pool3. Untagged files are accepted only for this network.
UNTAGGED_NET_PREFIX = "inception-v3-tf-2015-12-05/pool3"


class RunningStats:
    """Mean and covariance accumulated batch by batch in float64 (Chan et al.'s parallel update,
    which stays accurate when the mean is large compared with the spread, unlike raw sums)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.m2 = np.zeros((dim, dim), dtype=np.float64)

    def update(self, feats) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UserError(f"features must have shape (N, {self.dim}); got {x.shape}")
        if not np.isfinite(x).all():
            raise UserError(f"{int((~np.isfinite(x)).any(1).sum())} of {len(x)} feature vectors contain NaN/Inf "
                             "(broken images or a diverged feature network); refusing to compute statistics")
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        delta = mb - self.mean
        n = self.n + nb
        self.m2 += xc.T @ xc + np.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise UserError(f"a covariance needs at least 2 samples; got {self.n}")
        return self.m2 / (self.n - 1)  # unbiased, as np.cov / ADM / pytorch-fid / torchmetrics


@dataclass
class FeatureStats:
    """Gaussian summary of one image set under one feature network (plus, optionally, the
    features themselves, which precision/recall and KID need)."""

    mu: np.ndarray
    sigma: np.ndarray
    num: int
    feature_net: str = ""
    protocol: str = ""
    features: np.ndarray | None = None
    logits: np.ndarray | None = None  # only for the Inception Score, never saved

    @classmethod
    def from_running(cls, rs: RunningStats, feature_net: str = "", protocol: str = "", features=None):
        if rs.n < 2:
            raise UserError(f"need at least 2 images for a covariance; got {rs.n}")
        if rs.n < rs.dim:
            warnings.warn(f"only {rs.n} samples for {rs.dim}-d features: the covariance is singular and "
                          "the Frechet distance is biased upwards (use more samples than feature dims)",
                          stacklevel=2)
        return cls(rs.mean.copy(), rs.cov, rs.n, feature_net, protocol, features)

    def check_net(self, feature_net: str, where: str = "reference") -> None:
        """Refuse statistics made with another feature network or preprocessing."""
        if not self.feature_net:
            if not feature_net.startswith(UNTAGGED_NET_PREFIX):
                raise UserError(f"{where} has no `feature_net` tag (a third-party file?); such files are only "
                                 f"accepted as TF-Inception pool3 statistics, not for {feature_net}")
            if self.mu.shape != (2048,):
                raise UserError(f"{where}: untagged statistics of dimension {self.mu.shape} are not Inception pool3")
            warnings.warn(f"{where} has no feature_net tag: assuming TF-Inception pool3 statistics (ADM/pytorch-fid "
                          "convention); their resize protocol may differ from ours", stacklevel=2)
            return
        if self.feature_net != feature_net:
            raise UserError(f"{where} was made with feature network {self.feature_net!r} but this metric uses "
                             f"{feature_net!r}: recompute the reference with the same network (elit ref --metric-net)")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), in float64.

    method "sqrtm" is the pytorch-fid/ADM recipe: scipy's sqrtm of S1 S2; if that is not finite, an
    eps*I offset is added to both covariances; a tiny imaginary part from round-off is dropped, a
    large one raises (the statistics are broken) rather than returning a number.
    method "eigh" gives the same trace from symmetric eigendecompositions: S1 S2 is similar to the
    PSD matrix S1^1/2 S2 S1^1/2, so Tr (S1 S2)^1/2 = sum sqrt(eig). It agrees with sqrtm to ~1e-10
    relative, never goes complex, and is ~2x faster at 2048-d (30 s instead of 55 s here).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise UserError(f"statistics have different shapes: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise UserError(f"{name} contains NaN/Inf")
    diff = mu1 - mu2
    if method == "eigh":
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root @ s2 @ root
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    elif method == "sqrtm":
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            warnings.warn(f"sqrtm of the covariance product is not finite; adding {eps} to the diagonals", stacklevel=2)
            offset = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise UserError(f"sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g}): "
                                 "the covariances are degenerate")
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    else:
        raise UserError(f"unknown method {method!r}; choose sqrtm or eigh")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_features(x, y) -> float:
    """The same Frechet distance straight from two small feature sets (N x d each, N << d).

    With centred features A, B the covariances are A'A/(n1-1), B'B/(n2-1); the non-zero eigenvalues
    of S1 S2 are the squared singular values of B A' / sqrt((n1-1)(n2-1)), so Tr (S1 S2)^1/2 is that
    matrix's nuclear norm: an n2 x n1 SVD instead of a d x d matrix root (exact, not an approximation).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise UserError(f"need two (N>=2, d) feature sets of equal d; got {x.shape}, {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise UserError("features contain NaN/Inf")
    a, b = x - x.mean(0), y - y.mean(0)
    c1, c2 = len(x) - 1, len(y) - 1
    diff = x.mean(0) - y.mean(0)
    cross = np.linalg.svd(b @ a.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    return float(diff @ diff + (a * a).sum() / c1 + (b * b).sum() / c2 - 2.0 * cross)


def save_stats(path: str | os.PathLike, stats: FeatureStats) -> None:
    arrays = dict(mu=stats.mu, sigma=stats.sigma, num=np.int64(stats.num),
                  feature_net=np.array(stats.feature_net), protocol=np.array(stats.protocol))
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    with atomic_write(path) as f:   # an interrupted run never leaves a truncated reference behind
        np.savez(f, **arrays)


STATS_KEYS = ("mu", "sigma", "num", "feature_net", "protocol", "features")   # what save_stats writes


def written_by_save_stats(path: str | os.PathLike) -> str | None:
    """None if `path` is statistics `save_stats` wrote (tagged with its feature network); else what
    it holds instead, in words (so a command can refuse to overwrite it)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.files)
    except Exception as e:   # not an .npz at all (a zip error, a pickle, text)
        return f"it is not an .npz archive: {type(e).__name__}"
    if "feature_net" not in keys or not set(keys) <= set(STATS_KEYS):
        return f"it holds arrays {keys[:6]}" + (": images, as in an ADM batch or elit sample --npz" if "arr_0" in keys
                                                else "")
    return None


def is_stats_file(path: str | os.PathLike) -> bool:
    with np.load(path) as f:
        return "mu" in f.files and "sigma" in f.files


def load_stats(path: str | os.PathLike) -> FeatureStats:
    if not os.path.isfile(path):
        raise MissingInputError(f"reference statistics {path} not found")
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f.files or "sigma" not in f.files:
            raise UserError(f"{path} has no `mu`/`sigma` arrays (keys: {f.files}); make one with `elit ref`")
        mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
        num = int(f["num"]) if "num" in f.files else 0
        net = str(f["feature_net"]) if "feature_net" in f.files else ""
        proto = str(f["protocol"]) if "protocol" in f.files else "unknown (third-party file)"
        feats = f["features"] if "features" in f.files else None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return FeatureStats(mu, sigma, num, net, proto, feats)
