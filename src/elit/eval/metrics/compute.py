"""The metrics API that `elit fid`, `elit ref` and the budget sweep (`elit eval`) call.

    stats = compute_reference("fmnist-test", net="inception", out="ref.npz")
    res = compute_metrics(batches, "ref.npz", metrics=("fid",))      # batches: any iterable of uint8
    print(format_results(res))

Images stream through every feature network that the requested metrics need, batch by batch; only
the (mean, covariance) accumulators are kept, plus the features themselves when precision/recall
or KID ask for them (N x 2048 float32: 400 MB at 50k).
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

import numpy as np
from tqdm import tqdm

from elit.errors import UserError
from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics import ref_cache
from elit.eval.metrics.images import FMNIST_SOURCES, check_count, count_images, iter_image_batches, npz_keys
from elit.eval.metrics.scores import IS_UNAVAILABLE, inception_score, kid, precision_recall
from elit.eval.metrics.stats import FeatureStats, RunningStats, frechet_distance, load_stats

# metric -> feature network. Precision/recall use Inception pool3, as ADM's evaluator does.
METRIC_NET = {"fid": "inception", "is": "inception", "kid": "inception", "precision": "inception",
              "recall": "inception", "fdd": "dinov2", "fd_fmnist": "fmnist"}
NEEDS_FEATURES = ("kid", "precision", "recall")
NETS = ("inception", "dinov2", "fmnist")
LABEL = {"fid": "FID", "fdd": "FD_DINOv2 (FDD)", "fd_fmnist": "FD-FMNIST (NOT FID)", "is": "IS", "kid": "KID",
         "precision": "precision (k=3)", "recall": "recall (k=3)"}


def get_extractor(net: str, *, batch_size: int | None = None, device="cpu", inception_path: str | None = None,
                  dinov2_weights: str | None = None, classifier_weights: str | None = None) -> FeatureExtractor:
    """Build a feature network by short name: "inception", "dinov2" or "fmnist"."""
    kw = dict(device=device) | ({"batch_size": batch_size} if batch_size else {})
    if net == "inception":
        from elit.eval.metrics.inception import InceptionV3Features
        return InceptionV3Features(inception_path, **kw)
    if net == "dinov2":
        from elit.eval.metrics.dinov2 import DINOv2Features
        return DINOv2Features(dinov2_weights, **kw)
    if net == "fmnist":
        from elit.eval.metrics.classifier import FMNISTFeatures
        return FMNISTFeatures(classifier_weights, **kw)
    raise UserError(f"unknown feature network {net!r}; choose from {', '.join(NETS)}")


def extract_stats(source, extractors: dict[str, FeatureExtractor], *, batch_size: int = 64, num: int | None = None,
                  keep_features: Iterable[str] = (), keep_logits: Iterable[str] = (), progress: bool = True,
                  desc: str = "features") -> dict[str, FeatureStats]:
    """Stream `source` (see `iter_image_batches`) once through every extractor -> FeatureStats per net.
    Features/logits are kept (float32 / float64) only for the nets named in keep_features/keep_logits."""
    num = check_count(num)
    running = {k: RunningStats(e.dim) for k, e in extractors.items()}
    feats = {k: [] for k in keep_features}
    logits = {k: [] for k in keep_logits}
    total = count_images(source, num) if progress else None   # a total gives the bar an ETA
    bar = tqdm(total=total, unit="img", desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    for batch in iter_image_batches(source, batch_size, num):
        for k, ext in extractors.items():
            f = ext(batch)
            running[k].update(f)
            if k in feats:
                feats[k].append(f.astype(np.float32))
            if k in logits:
                logits[k].append(ext.logits(batch).double().cpu().numpy())
        bar.update(len(batch))
    bar.close()
    out = {}
    for k, ext in extractors.items():
        kept = np.concatenate(feats[k]) if feats.get(k) else None
        out[k] = FeatureStats.from_running(running[k], ext.name, ext.protocol, kept)
        if k in logits:
            out[k].logits = np.concatenate(logits[k])
    return out


def compute_reference(source, net: str = "inception", out: str | None = None, *, num: int | None = None,
                      keep_features: bool = False, batch_size: int = 64, progress: bool = True,
                      extractor: FeatureExtractor | None = None, **net_kwargs) -> FeatureStats:
    """Reference statistics of an image source under one network; saved to `out` when given."""
    from elit.eval.metrics.stats import save_stats
    ext = extractor or get_extractor(net, **net_kwargs)
    stats = cached_stats(source, {net: ext}, batch_size=batch_size, num=num, progress=progress,
                         keep_features=[net] if keep_features else [], desc=f"ref {net}")[net]
    if out:
        save_stats(out, stats)
    return stats


def cached_stats(source, extractors: dict[str, FeatureExtractor], *, num: int | None = None,
                 keep_features: Iterable[str] = (), progress: bool = True, **kwargs) -> dict[str, FeatureStats]:
    """`extract_stats`, but statistics of a named dataset (fmnist-test, ...) come from the user
    cache when they were computed before, and go there when they were not (see ref_cache)."""
    if not ref_cache.cacheable(source):
        return extract_stats(source, extractors, num=num, keep_features=keep_features, progress=progress, **kwargs)
    num, keep_features = check_count(num), set(keep_features)
    paths = {k: ref_cache.cache_path(source, e, num, k in keep_features) for k, e in extractors.items()}
    found = {k: st for k, path in paths.items() if (st := ref_cache.load(path)) is not None}
    for k in found:
        if progress:
            print(f"reference {source} ({k}): statistics cached in {paths[k]} (computed once; delete to recompute)",
                  file=sys.stderr)
    todo = {k: e for k, e in extractors.items() if k not in found}
    if todo:
        fresh = extract_stats(source, todo, num=num, keep_features=[k for k in todo if k in keep_features],
                              progress=progress, **kwargs)
        for k, st in fresh.items():
            ref_cache.store(paths[k], st)
        found.update(fresh)
    return found


def is_stats_file(ref) -> bool:
    """True if `ref` is a statistics file we should use as such. ADM reference batches hold both
    images (arr_0) and untagged stats; we then recompute from the images, under our exact protocol."""
    if not (isinstance(ref, (str, os.PathLike)) and str(ref).endswith(".npz") and os.path.isfile(ref)):
        return False
    keys = npz_keys(ref)
    return "mu" in keys and "sigma" in keys and ("feature_net" in keys or "arr_0" not in keys)


def _describe(ref) -> str:
    return os.fspath(ref) if isinstance(ref, (str, os.PathLike)) else type(ref).__name__


def reference_stats(ref, extractors: dict[str, FeatureExtractor], *, need_features: Iterable[str] = (),
                    batch_size: int = 64, num: int | None = None, progress: bool = True):
    """Reference statistics per network, the one rule every command uses (`elit fid`, `elit eval`,
    `compute_metrics`): a statistics file (or FeatureStats) is loaded and checked against the
    network; an image source is measured, one pass per distinct source through all nets that use it.
    An ADM reference batch holds both images (arr_0) and untagged mu/sigma: its images are
    measured, under our exact protocol. `ref`: one reference for all nets, or {net: reference}.
    Returns ({net: FeatureStats}, {net: description of the reference})."""
    need_features = set(need_features)
    refs, todo, where = {}, {}, {}
    for n in extractors:
        r = ref.get(n) if isinstance(ref, dict) else ref
        if r is None:
            raise UserError(f"no reference given for the {n} network; pass --ref {n}=PATH "
                            f"(given: {sorted(ref) if isinstance(ref, dict) else ref})")
        where[n] = _describe(r)
        if isinstance(r, FeatureStats) or is_stats_file(r):
            refs[n] = r if isinstance(r, FeatureStats) else load_stats(r)
            refs[n].check_net(extractors[n].name, f"reference {_describe(r)}")
            if n in need_features and refs[n].features is None:
                raise UserError(f"reference {_describe(r)} holds no features, which precision/recall/KID need: "
                                "make it with `elit ref --keep-features` or pass the reference images")
        else:
            todo.setdefault(os.fspath(r) if isinstance(r, (str, os.PathLike)) else id(r), (r, []))[1].append(n)
    for src, group in todo.values():
        refs.update(cached_stats(src, {n: extractors[n] for n in group}, batch_size=batch_size, num=num,
                                 keep_features=[n for n in group if n in need_features], progress=progress,
                                 desc="reference"))
    return refs, where


def compute_metrics(images, ref, metrics: Iterable[str] = ("fid",), *, batch_size: int = 64, num: int | None = None,
                    extractors: dict[str, FeatureExtractor] | None = None, progress: bool = True,
                    ref_num: int | None = None, fd_method: str = "sqrtm", **net_kwargs) -> dict:
    """Measure generated `images` against `ref`.

    images: an image source (folder, ADM .npz, uint8 array) or any iterable of uint8 batches.
    ref: a stats .npz, a FeatureStats, an image source ("fmnist-test", folder, .npz with arr_0), or a
        dict {net: any of those} when several networks are involved.
    metrics: any of fid, fdd, fd_fmnist, precision, recall, kid, is.
    fd_method: "sqrtm" (pytorch-fid/ADM recipe) or "eigh" (same value, ~2x faster at 2048-d).
    num / ref_num: use only the first N generated / reference images.
    Returns {metric: value, ..., "kid_std", "num_samples", "protocols": {metric: text}}.
    """
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_NET]
    if unknown:
        raise UserError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NET)}")
    nets = sorted({METRIC_NET[m] for m in metrics})
    exts = dict(extractors or {})
    for n in nets:
        if n not in exts:
            exts[n] = get_extractor(n, **net_kwargs)
    if "is" in metrics and not exts["inception"].has_logits:
        raise UserError(IS_UNAVAILABLE)  # fail before spending any time on features
    need_feats = [n for n in nets if any(METRIC_NET[m] == n for m in metrics if m in NEEDS_FEATURES)]

    refs, where = reference_stats(ref, {n: exts[n] for n in nets}, need_features=need_feats, batch_size=batch_size,
                                  num=ref_num, progress=progress)
    gen = extract_stats(images, {n: exts[n] for n in nets}, batch_size=batch_size, num=num, progress=progress,
                        keep_features=need_feats, keep_logits=["inception"] if "is" in metrics else [],
                        desc="samples")
    res: dict = {"protocols": {}}
    for m in metrics:
        n = METRIC_NET[m]
        g, r = gen[n], refs[n]
        if m in ("fid", "fdd", "fd_fmnist"):
            res[m] = frechet_distance(g.mu, g.sigma, r.mu, r.sigma, method=fd_method)
        elif m in ("precision", "recall"):
            if "precision" not in res:
                res["precision"], res["recall"] = precision_recall(r.features, g.features, k=3)
        elif m == "kid":
            res["kid"], res["kid_std"] = kid(r.features, g.features)
        elif m == "is":
            res["is"], res["is_std"] = inception_score(g.logits)
        ref_n = f"{r.num} images" if r.num else "image count unknown"
        res["protocols"][m] = f"{exts[n].protocol}; {g.num} samples vs reference {where[n]} ({ref_n})"
    res["num_samples"] = gen[nets[0]].num
    return res


def format_results(res: dict) -> str:
    """One line per number, each with its protocol (FID depends on it: never print one bare)."""
    lines = []
    for m, proto in res["protocols"].items():
        std = f" +- {res[m + '_std']:.4g}" if m + "_std" in res else ""
        lines.append(f"{LABEL[m]} = {res[m]:.4f}{std}   [{proto}]")
    return "\n".join(lines)


__all__ = ["METRIC_NET", "FMNIST_SOURCES", "get_extractor", "extract_stats", "compute_reference", "compute_metrics",
           "format_results"]
