"""Image inputs for metrics: uint8 arrays in any common layout, image folders, ADM `.npz` batches,
and the Fashion-MNIST splits, all streamed in batches and checked for mixed sizes/modes.

Metrics take uint8 images only: a float image could be in [0, 1], [-1, 1] or [0, 255], and guessing
wrong gives a plausible but wrong FID. Convert with `((x + 1) * 127.5).round().clamp(0, 255)`.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from elit.errors import MissingInputError, UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FMNIST_SOURCES = ("fmnist-train", "fmnist-test")


def as_uint8_nchw(images) -> torch.Tensor:
    """uint8 (N,H,W), (N,H,W,C) or (N,C,H,W) with C in {1, 3}, numpy or torch -> uint8 (N,C,H,W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise UserError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if x.dtype != torch.uint8:
        raise UserError(f"images must be uint8 in [0, 255], got {x.dtype}: convert explicitly, "
                         "e.g. ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8) for [-1, 1] data")
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim != 4:
        raise UserError(f"images must be (N,H,W), (N,H,W,C) or (N,C,H,W); got shape {tuple(x.shape)}")
    # ADM batches are NHWC; torch tensors usually NCHW. Channels-last wins only when unambiguous.
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise UserError(f"images need 1 (grayscale) or 3 (RGB) channels; got shape {tuple(x.shape)}")
    return x.contiguous()


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Grayscale -> RGB by copying the channel, exactly what PIL's convert('RGB') does."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _folder_files(folder: Path) -> list[Path]:
    """The images under `folder`, without the files `elit sample` marked as not samples (its grid);
    an unfinished `elit sample` run is refused (see elit.sampling.folder)."""
    from elit.sampling.folder import not_samples
    skip = not_samples(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS
                   and p.relative_to(folder).as_posix() not in skip and not p.name.startswith("."))
    if not files:
        raise MissingInputError(f"no images ({', '.join(IMAGE_EXTS)}) under {folder}")
    return files


def check_count(num, what: str = "num") -> int | None:
    """None (all) or a count >= 1: a negative count must never act as a slice."""
    if num is None:
        return None
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise UserError(f"{what} must be a whole number >= 1 (or None for all images), got {num!r}")
    return int(num)


def _iter_folder(folder: Path, batch_size: int, num: int | None) -> Iterator[np.ndarray]:
    files = _folder_files(folder)[:num]
    ref_size = ref_mode = None
    batch = []
    for p in files:
        try:
            im = Image.open(p)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{p} is not a readable image ({type(e).__name__}); remove it from {folder}") from None
        with im:
            if im.mode not in ("L", "RGB"):
                raise UserError(f"{p}: image mode {im.mode}; metrics accept L (grayscale) or RGB images only")
            if ref_size is None:
                ref_size, ref_mode = im.size, im.mode
            if im.size != ref_size or im.mode != ref_mode:
                raise UserError(f"mixed images in {folder}: {p.name} is {im.mode} {im.size[0]}x{im.size[1]}, "
                                 f"the first image was {ref_mode} {ref_size[0]}x{ref_size[1]}")
            try:
                batch.append(np.asarray(im))
            except OSError as e:   # a truncated file fails only when its pixels are read
                raise UserError(f"{p} is a damaged image ({e}); remove it from {folder}") from None
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _npy_header(f) -> tuple:
    """(shape, fortran_order, dtype) of the .npy stream `f`, leaving it at the data."""
    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(f)


def _iter_npz_array(path: Path, key: str, batch_size: int, num: int | None) -> Iterator[np.ndarray]:
    """Read one array of an .npz in slices straight from the zip member, so a 50k-image ADM batch
    (10 GB at 256px) is never held in memory at once."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, fortran, dtype = _npy_header(f)
        if fortran or dtype != np.uint8:
            raise UserError(f"{path}:{key} must be a C-ordered uint8 array, got dtype {dtype}")
        total = shape[0] if num is None else min(num, shape[0])
        per = int(np.prod(shape[1:]))
        for start in range(0, total, batch_size):
            n = min(batch_size, total - start)
            yield np.frombuffer(bytearray(f.read(n * per)), np.uint8).reshape((n,) + tuple(shape[1:]))


def npz_keys(path: str | os.PathLike) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} is not a readable .npz file ({e}); make statistics with `elit ref` or images "
                        f"with `elit sample --npz`") from None


def count_images(source, num: int | None = None) -> int | None:
    """How many images `iter_image_batches(source, num=num)` yields, when known without reading them
    (for a progress bar with a total and an ETA)."""
    total = None
    if isinstance(source, (np.ndarray, torch.Tensor)):
        total = len(source)
    elif isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if s in FMNIST_SOURCES:
            from elit.data.fashion_mnist import load_fashion_mnist
            total = len(load_fashion_mnist(s.split("-")[1])[1])   # parsed once per process, then cached
        elif Path(s).is_dir():
            total = len(_folder_files(Path(s)))
        elif Path(s).is_file() and s.endswith(".npz") and "arr_0" in npz_keys(s):
            with zipfile.ZipFile(s) as z, z.open("arr_0.npy") as f:
                total = _npy_header(f)[0][0]
    if total is None:
        return num
    return total if num is None else min(num, total)


def fmnist_images(split: str, num: int | None = None) -> torch.Tensor:
    """Fashion-MNIST as the generator sees it: 28x28 padded by 2 black pixels to 32x32, uint8 (N,1,32,32)."""
    from elit.data.fashion_mnist import load_fashion_mnist
    x, _ = load_fashion_mnist(split)
    x = x[:num] if num else x
    return torch.nn.functional.pad(x, (2, 2, 2, 2)).unsqueeze(1)


def iter_image_batches(source, batch_size: int = 64, num: int | None = None) -> Iterator[torch.Tensor]:
    """Yield uint8 (B,C,H,W) batches from a folder, an ADM `.npz` (`arr_0`, uint8 N,H,W[,C]),
    "fmnist-train"/"fmnist-test", an in-memory array, or an iterable of arrays."""
    num = check_count(num)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    if isinstance(source, (np.ndarray, torch.Tensor)):
        x = as_uint8_nchw(source)[:num]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]
        return
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if s in FMNIST_SOURCES:
            yield from iter_image_batches(fmnist_images(s.split("-")[1], num), batch_size)
            return
        p = Path(s)
        if p.is_dir():
            batches = _iter_folder(p, batch_size, num)
        elif p.is_file() and p.suffix == ".npz":
            if "arr_0" not in npz_keys(p):
                raise UserError(f"{p} holds no image batch `arr_0` (keys: {npz_keys(p)})")
            batches = _iter_npz_array(p, "arr_0", batch_size, num)
        else:
            raise MissingInputError(f"{s}: not an image folder, an .npz file or one of {', '.join(FMNIST_SOURCES)}")
        for b in batches:
            yield as_uint8_nchw(b)
        return
    # Any other iterable: batches the caller streams (e.g. the sampler). Check they agree.
    seen, count = None, 0
    for b in source:
        b = as_uint8_nchw(b)
        if seen is None:
            seen = tuple(b.shape[1:])
        elif tuple(b.shape[1:]) != seen:
            raise UserError(f"mixed image batches: got (C,H,W) {tuple(b.shape[1:])} after {seen}")
        if num is not None:
            b = b[:num - count]
        count += len(b)
        if len(b):
            yield b
        if num is not None and count >= num:
            return
