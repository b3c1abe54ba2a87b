"""Fashion-MNIST from the raw idx files, with no download code and no torchvision.

The four idx files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-...`, each
optionally `.gz`) are parsed here with numpy. The default folder is the Debian package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist); `ELIT_FMNIST_ROOT` or `root=` overrides.

Images are padded 28 -> 32 so that patch 2 gives 16x16 tokens: the token geometry of the paper's
256px setting (see docs/data.md).
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from elit.errors import MissingInputError, UserError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_PREFIX = {"train": "train", "test": "t10k"}
# idx magic: two zero bytes, dtype code 0x08 (uint8), number of dimensions.
_MAGIC = {1: 0x00000801, 3: 0x00000803}


def _resolve_root(root: str | os.PathLike | None) -> Path:
    return Path(root if root is not None else os.environ.get("ELIT_FMNIST_ROOT") or DEFAULT_ROOT)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MissingInputError(
        f"Fashion-MNIST file {name}(.gz) not found in {folder}: run `apt-get install dataset-fashion-mnist`, "
        "or put the four idx files in a folder and pass root=... (or set ELIT_FMNIST_ROOT)")


def missing_files(root: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """(the folder that would be read, the idx files of either split it lacks): an empty list means
    Fashion-MNIST is there. The one check of "is the dataset installed" (the tests' guard uses it)."""
    folder = _resolve_root(root)
    names = [f"{p}-{kind}" for p in _PREFIX.values() for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    return folder, [n for n in names if not ((folder / n).is_file() or (folder / f"{n}.gz").is_file())]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one idx file, checking the header so a truncated or wrong file fails loudly here
    rather than as a shape error deep inside training."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise UserError(f"{path}: corrupt gzip file ({e})") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: file too short for an idx header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _MAGIC[ndim]:
        raise UserError(f"{path}: bad idx magic number {magic:#010x}, expected {_MAGIC[ndim]:#010x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise UserError(f"{path}: size {len(raw)} bytes does not match header dims {dims} "
                         f"({expected} bytes expected); the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=8)
def _load_cached(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _PREFIX[split]
    images = _read_idx(_find(Path(folder), f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_find(Path(folder), f"{prefix}-labels-idx1-ubyte"), 1)
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{folder}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise UserError(f"{folder}: {split} labels go up to {labels.max()}, expected < {len(CLASS_NAMES)}")
    return images, labels


def load_fashion_mnist(split: str = "train", root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) for split "train" (60k) or "test" (10k).

    Parsed arrays are cached in-process (training and metrics load them more than once); the
    returned tensors are fresh copies, so callers may modify them.
    """
    if split not in _PREFIX:
        raise UserError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    folder = _resolve_root(root)
    if not folder.is_dir():
        raise MissingInputError(
            f"Fashion-MNIST folder {folder} does not exist: run `apt-get install dataset-fashion-mnist`, "
            "or put the four idx files in a folder and pass root=... (or set ELIT_FMNIST_ROOT)")
    images, labels = _load_cached(split, str(folder.resolve()))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split_fingerprint(split: str, root: str | None = None) -> str:
    """Where the split's files are and their sizes and times: changes when the data does."""
    if split not in _PREFIX:
        raise UserError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    folder = _resolve_root(root)
    parts = []
    for name in (f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte"):
        path = _find(folder, name)
        st = path.stat()
        parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


class FashionMNIST(Dataset):
    """Items (x, y): x float32 (1, 32, 32) in [-1, 1], y int64.

    The 28x28 image is padded by 2 px of background (-1, i.e. black, as Fashion-MNIST's background
    is 0) on every side, so that patch 2 gives 16x16 tokens.
    """

    num_classes = len(CLASS_NAMES)
    image_shape = (1, 32, 32)
    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", root: str | None = None):
        # Keep uint8 (47 MB for train) and convert per item: a float32 padded copy would be 245 MB.
        self.images, self.labels = load_fashion_mnist(split, root)
        self.split = split

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div(127.5).sub(1.0)  # uint8 [0, 255] -> [-1, 1]
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
        return x.unsqueeze(0), self.labels[i]
