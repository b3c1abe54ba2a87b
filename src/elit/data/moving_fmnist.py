"""Moving Fashion-MNIST: clips of one Fashion-MNIST item gliding and bouncing on a black canvas.

Offline video data for the video backbone, synthesised from the Debian package's images. Clip i is
a pure function of (seed, i): which item (uniform over the split), its start position and its
velocity (integer pixels per frame, each axis in [-max_speed, max_speed], not both 0). The item
bounces off the canvas edges (reflection), so it stays whole in every frame. The label is the
item's class. Item i of the dataset is the same whatever the worker, rank or epoch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from elit.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from elit.data.seeding import derive_seed
from elit.errors import UserError

_CLIP_STREAM = 0xC11F


def bounce(start: int, velocity: int, steps: int, room: int) -> list[int]:
    """Positions 0..room of a point moving `velocity` per step from `start`, reflected at 0 and room."""
    if room == 0:
        return [0] * steps
    period = 2 * room
    out = []
    for k in range(steps):
        p = (start + k * velocity) % period
        out.append(p if p <= room else period - p)
    return out


class MovingFashionMNIST(Dataset):
    """Items (x, y): x float32 (1, frames, size, size) in [-1, 1], y int64 (the item's class)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", frames: int = 4, size: int = 32, item_size: int = 20,
                 max_speed: int = 3, length: int | None = None, seed: int = 0, root: str | None = None):
        for name, v in (("frames", frames), ("size", size), ("item_size", item_size), ("max_speed", max_speed)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"moving-fmnist {name} must be a positive integer, got {v!r}")
        if item_size > size:
            raise UserError(f"moving-fmnist item_size {item_size} is larger than the canvas size {size}")
        images, self.labels = load_fashion_mnist(split, root)
        # resize every item once (antialiased area average; 28 -> item_size), kept as uint8
        items = F.interpolate(images[:, None].float(), size=(item_size, item_size), mode="area")
        self.items = items[:, 0].round().clamp(0, 255).to(torch.uint8)
        self.frames, self.size, self.item_size, self.max_speed = frames, size, item_size, max_speed
        self.seed = int(seed)
        self.length = len(self.labels) if length is None else int(length)
        if self.length < 1:
            raise UserError(f"moving-fmnist length must be >= 1, got {length}")
        self.image_shape = (1, frames, size, size)

    def __len__(self) -> int:
        return self.length

    def clip_params(self, i: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """(item index, start (row, col), velocity (row, col)) of clip i."""
        rng = np.random.default_rng(derive_seed(self.seed, i, _CLIP_STREAM))
        item = int(rng.integers(len(self.labels)))
        room = self.size - self.item_size
        start = tuple(int(v) for v in rng.integers(0, room + 1, size=2))
        while True:
            velocity = tuple(int(v) for v in rng.integers(-self.max_speed, self.max_speed + 1, size=2))
            if velocity != (0, 0):
                return item, start, velocity

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        item, (r0, c0), (vr, vc) = self.clip_params(i)
        room, s = self.size - self.item_size, self.item_size
        clip = torch.zeros(self.frames, self.size, self.size, dtype=torch.uint8)
        for k, (r, c) in enumerate(zip(bounce(r0, vr, self.frames, room), bounce(c0, vc, self.frames, room))):
            clip[k, r:r + s, c:c + s] = self.items[item]
        x = clip.float().div(127.5).sub(1.0)[None]          # uint8 [0, 255] -> [-1, 1], (1, T, H, W)
        return x, self.labels[item]
