"""An ImageNet-layout image folder with ADM's centre crop, using PIL only (no torchvision).

Layout: either one sub-folder per class (class names sorted -> indices 0..K-1, images found
recursively inside each), or a flat folder of images = unconditional data (every label 0, one class).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from elit.data.seeding import EpochFlipMixin
from elit.errors import MissingInputError, UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop (guided-diffusion `center_crop_arr`), the preprocessing of DiT/SiT/ELIT on
    ImageNet: halve with a BOX filter while the short side is at least 2*size (cheap and alias-free),
    BICUBIC-resize so the short side is exactly `size`, then crop the centre square."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top: top + size, left: left + size]


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_image_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Return (files, labels, class_names); class_names is [] for a flat (unconditional) folder."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"image folder {root} does not exist")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    top_files = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    classes = [d for d in subdirs if _images_under(d)]
    if classes and top_files:
        raise UserError(f"{root} mixes images ({top_files[0].name}, ...) with class sub-folders; "
                         "use either one sub-folder per class or a flat folder of images")
    files, labels = [], []
    if classes:
        for label, d in enumerate(classes):
            found = _images_under(d)
            files += found
            labels += [label] * len(found)
        names = [d.name for d in classes]
    else:
        files, names = sorted(top_files), []
        labels = [0] * len(files)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {root}")
    return files, labels, names


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read one file as RGB, centre-cropped to size x size; uint8 (size, size, 3)."""
    try:
        with Image.open(path) as im:
            im.load()
            # Grayscale, palette, CMYK and RGBA all become RGB so every item has 3 channels
            # (alpha is dropped, not composited).
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises many types for bad files
        raise UserError(f"cannot read image {path}: {e}") from e
    return center_crop_arr(rgb, size)


class ImageFolder(EpochFlipMixin, Dataset):
    """Items (x, y): x float32 (3, size, size) in [-1, 1], y int64.

    Every image is converted to RGB. With `flip=True` an item is mirrored left-right with probability
    1/2, decided by (seed, epoch, index) only (see `elit.data.seeding`), never by the global RNG.
    `num_classes` is the number of class folders, or 1 for a flat folder (all labels 0).
    """

    def __init__(self, root: str | Path, image_size: int = 256, flip: bool = False, seed: int = 0):
        if image_size <= 0:
            raise UserError(f"image_size must be positive, got {image_size}")
        self.root = Path(root)
        self.files, self.labels, self.class_names = scan_image_folder(self.root)
        self.image_size, self.flip, self.seed = int(image_size), bool(flip), int(seed)
        self.num_classes = max(1, len(self.class_names))
        self.unconditional = not self.class_names
        self.image_shape = (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        arr = load_image(self.files[i], self.image_size)
        if self._should_flip(i):
            arr = arr[:, ::-1]
        x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return x, torch.tensor(self.labels[i], dtype=torch.int64)
