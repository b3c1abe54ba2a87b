"""Reference statistics of the named datasets (fmnist-test, fmnist-train), computed once per
(dataset, split, feature network, count) and kept in the user cache.

The Inception statistics of Fashion-MNIST's 10,000 test images take about half an hour on a busy
2-core CPU; every later `elit ref`, `elit fid` or `elit eval` against the same reference reads them back in
milliseconds. The key covers the network's weights and preprocessing and the data files (path,
size, time), so a changed network or dataset is computed afresh. Folders and .npz sources are
never cached: their contents can change under the same name.

Location: $ELIT_CACHE_DIR, else $XDG_CACHE_HOME/elit, else ~/.cache/elit (subfolder references/).
Deleting it is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

from elit.eval.metrics.images import FMNIST_SOURCES


def cache_dir() -> pathlib.Path:
    root = os.environ.get("ELIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "elit")
    return pathlib.Path(root) / "references"


def cacheable(source) -> bool:
    return isinstance(source, str) and source in FMNIST_SOURCES


def _weights_digest(extractor) -> str:
    """A hash of the network's parameters and buffers (computed once per extractor)."""
    cached = getattr(extractor, "_elit_weights_digest", None)
    if cached is None:
        import torch
        digest = hashlib.sha256()
        for value in vars(extractor).values():
            if isinstance(value, torch.nn.Module):
                for name, tensor in sorted(value.state_dict().items()):
                    digest.update(name.encode())
                    digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        cached = digest.hexdigest()
        extractor._elit_weights_digest = cached
    return cached


def cache_path(source: str, extractor, num: int | None, keep_features: bool) -> pathlib.Path:
    from elit.data.fashion_mnist import split_fingerprint
    key = json.dumps({"source": source, "num": num, "features": keep_features, "net": extractor.name,
                      "protocol": extractor.protocol, "weights": _weights_digest(extractor),
                      "data": split_fingerprint(source.split("-")[1])}, sort_keys=True)
    net = extractor.name.split("/")[0].split("@")[0]
    tag = f"{source}-{net}-{num or 'all'}{'-features' if keep_features else ''}"
    return cache_dir() / f"{tag}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def load(path: pathlib.Path):
    """The cached statistics, or None (missing, or unreadable: then recomputed and rewritten)."""
    from elit.eval.metrics.stats import load_stats
    if not path.is_file():
        return None
    try:
        return load_stats(path)
    except Exception:   # a damaged cache entry is not the user's problem: compute it again
        return None


def store(path: pathlib.Path, stats) -> None:
    from elit.eval.metrics.stats import save_stats
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_stats(path, stats)
    except OSError:   # a read-only home: the result is still returned, only not kept
        pass
