"""A folder of the user's videos (mp4, webm, mkv, avi, mov), decoded with PyAV into clips.

Layout as an image folder: one sub-folder per class (sorted names -> 0..K-1) or a flat folder
(unconditional). Every video is cut into non-overlapping clips of `frames` frames taken every
`stride`-th decoded frame; each frame gets ADM's centre crop to `size` (elit.data.image_folder).
Files are opened once at start-up to count their frames: a corrupt file, or one shorter than one
clip, is refused then, with its name, not halfway through training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from elit.data.image_folder import center_crop_arr
from elit.errors import MissingInputError, UserError

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"}


def _av():
    try:
        import av
    except ImportError as e:
        raise UserError("video folders need PyAV: pip install 'elit-diffusion[video]'") from e
    return av


def count_frames(path: Path) -> int:
    """Decoded frames in a video file; UserError naming the file if it cannot be decoded."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path} has no video stream")
            return sum(1 for _ in container.decode(video=0))
    except UserError:
        raise
    except Exception as e:   # PyAV raises its own error types (InvalidDataError, ...)
        raise UserError(f"cannot decode video {path}: {type(e).__name__}: {e}") from None


def decode_frames(path: Path, indices: list[int]) -> list[Image.Image]:
    wanted, out = set(indices), {}
    with _av().open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                out[k] = frame.to_image()
            if k >= indices[-1]:
                break
    return [out[k] for k in indices]


class VideoFolder(Dataset):
    """Items (x, y): x float32 (3, frames, size, size) in [-1, 1], y int64."""

    def __init__(self, root, frames: int = 8, size: int = 64, stride: int = 1):
        root = Path(root)
        if not root.is_dir():
            raise MissingInputError(f"video folder {root} does not exist")
        for name, v in (("frames", frames), ("size", size), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"video folder {name} must be a positive integer, got {v!r}")
        self.root, self.frames, self.size, self.stride = root, frames, size, stride
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        groups = [(d.name, sorted(f for f in d.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS)) for d in subdirs]
        groups = [(name, files) for name, files in groups if files]
        flat = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        if groups and flat:
            raise UserError(f"{root} mixes videos ({flat[0].name}, ...) with class sub-folders; use one or the other")
        if not groups:
            groups = [("", flat)]
        self.class_names = [name for name, _ in groups] if groups[0][0] else []
        span = frames * stride
        self.clips: list[tuple[Path, int, int]] = []     # (file, first frame, label)
        for label, (_, files) in enumerate(groups):
            for f in files:
                n = count_frames(f)
                if n < span:
                    raise UserError(f"{f} has {n} frames, fewer than one clip of {frames} frames at stride "
                                    f"{stride} ({span}); remove it or lower frames/stride")
                self.clips += [(f, start, label) for start in range(0, n - span + 1, span)]
        if not self.clips:
            raise UserError(f"no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) found in {root}")
        self.num_classes = max(1, len(self.class_names))
        self.image_shape = (3, frames, size, size)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, start, label = self.clips[i]
        images = decode_frames(path, list(range(start, start + self.frames * self.stride, self.stride)))
        arr = np.stack([center_crop_arr(im.convert("RGB"), self.size) for im in images])   # (T, H, W, 3)
        x = torch.from_numpy(arr).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
        return x, torch.tensor(label, dtype=torch.int64)
