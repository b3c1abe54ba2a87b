"""Pre-extracted VAE latents, stored as safetensors shards plus one index.json.

    DIR/index.json                 what the latents are (see `LatentShardWriter.finish`)
    DIR/shard-00000.safetensors    latents (N, C, h, w) float16/float32, labels (N,) int64
    DIR/shard-00001.safetensors    ...

Latents are already multiplied by the VAE's scaling_factor (after subtracting shift_factor when the
VAE has one), so the model trains on them directly; decode with `z / scaling_factor + shift_factor`.
index.json is written last, so a folder without it is an unfinished extraction, never a silently
short data set.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import Dataset

from elit._io import atomic_write, write_json
from elit.data.seeding import EpochFlipMixin
from elit.errors import MissingInputError, UserError

FORMAT = "elit-latents"
VERSION = 1
INDEX = "index.json"
PROGRESS = "progress.json"  # present only while an extraction is unfinished


def _atomic_write_json(path: Path, obj: dict) -> None:
    write_json(path, obj)


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


class LatentShardDataset(EpochFlipMixin, Dataset):
    """Items (latent float32 (C, h, w), label int64) read lazily from the shards.

    `flip=True` mirrors the latent left-right (the last axis) with probability 1/2, per
    (seed, epoch, index). This is what DiT / fast-DiT users do with stored latents; it is an
    approximation (the VAE is not exactly flip-equivariant), but close enough to serve as the
    usual horizontal-flip augmentation without extracting every image twice.
    """

    def __init__(self, root: str | Path, flip: bool = False, seed: int = 0):
        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            hint = " (the extraction is unfinished: rerun `elit extract-latents` with the same arguments)" \
                if (self.root / PROGRESS).is_file() else ""
            raise MissingInputError(f"no {INDEX} in {self.root}{hint}")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise UserError(f"{index_path}: not an {FORMAT} v{VERSION} index "
                             f"(format={self.index.get('format')!r}, version={self.index.get('version')!r})")
        self.shards = [self.root / s["file"] for s in self.index["shards"]]
        counts = [int(s["num_items"]) for s in self.index["shards"]]
        for path in self.shards:
            if not path.is_file():
                raise MissingInputError(f"latent shard {path} listed in {index_path} is missing")
        self.starts = [0]
        for n in counts:
            self.starts.append(self.starts[-1] + n)
        if self.starts[-1] != self.index["num_items"]:
            raise UserError(f"{index_path}: shards hold {self.starts[-1]} items, index says {self.index['num_items']}")
        self.flip, self.seed = bool(flip), int(seed)
        self.class_names = list(self.index.get("class_names") or [])
        self.num_classes = int(self.index.get("num_classes") or max(1, len(self.class_names)))
        self.image_shape = tuple(self.index["latent_shape"])  # what the model sees: (C, h, w)
        self.scaling_factor = float(self.index["scaling_factor"])
        self.shift_factor = self.index.get("shift_factor")
        self._handles: dict[int, object] = {}  # opened lazily in each worker process

    def __getstate__(self):  # safetensors handles cannot be pickled to DataLoader workers
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return self.starts[-1]

    def _handle(self, k: int):
        if k not in self._handles:
            self._handles[k] = safe_open(str(self.shards[k]), framework="pt")
        return self._handles[k]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} latents")
        k = bisect.bisect_right(self.starts, i) - 1
        f, j = self._handle(k), i - self.starts[k]
        z = f.get_slice("latents")[j].float()
        if self._should_flip(i):
            z = z.flip(-1)
        return z, f.get_slice("labels")[j].to(torch.int64)


class LatentShardWriter:
    """Writes shards one by one (each atomically: temp file + os.replace), then index.json.

    `progress.json` records `settings` and the finished shards, so an interrupted extraction resumes
    at the next shard; opening a non-empty folder that is not an unfinished extraction with the same
    settings is refused rather than mixing two data sets.
    """

    def __init__(self, root: str | Path, settings: dict, shard_size: int):
        if shard_size <= 0:
            raise UserError(f"shard size must be positive, got {shard_size}")
        self.root, self.settings, self.shard_size = Path(root), settings, int(shard_size)
        self.shards: list[dict] = []
        progress = self.root / PROGRESS
        if (self.root / INDEX).exists():
            raise UserError(f"{self.root} already holds a finished latent set ({INDEX}); choose another --out")
        if progress.is_file():
            saved = json.loads(progress.read_text())
            if saved.get("settings") != settings:
                diff = sorted(k for k in set(settings) | set(saved.get("settings", {}))
                              if settings.get(k) != saved.get("settings", {}).get(k))
                raise UserError(f"{self.root} holds an unfinished extraction with other settings "
                                 f"(differs in: {', '.join(diff)}); choose another --out or the same arguments")
            self.shards = saved["shards"]
        elif self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"{self.root} is not empty and is not an unfinished extraction; choose another --out")
        for s in self.shards:
            if not (self.root / s["file"]).is_file():
                raise UserError(f"{self.root}: shard {s['file']} recorded in {PROGRESS} is missing")
        # Nothing is written until the first shard is ready, so a run that fails early (a bad VAE path)
        # leaves no progress file behind that would block a corrected rerun.
        self._buf_z: list[torch.Tensor] = []
        self._buf_y: list[torch.Tensor] = []

    @property
    def num_done(self) -> int:
        """Items already in finished shards (an extraction restarts from this item)."""
        return sum(s["num_items"] for s in self.shards)

    def _save_progress(self) -> None:
        _atomic_write_json(self.root / PROGRESS, {"settings": self.settings, "shards": self.shards})

    def _write_shard(self, z: torch.Tensor, y: torch.Tensor) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        name = shard_name(len(self.shards))
        with atomic_write(self.root / name) as f:
            f.write(save({"latents": z.contiguous(), "labels": y.to(torch.int64).contiguous()}))
        self.shards.append({"file": name, "num_items": int(z.shape[0])})
        self._save_progress()

    def add(self, latents: torch.Tensor, labels: torch.Tensor) -> None:
        """Buffer a batch; write every full shard."""
        if latents.shape[0] != labels.shape[0]:
            raise UserError(f"{latents.shape[0]} latents but {labels.shape[0]} labels")
        self._buf_z.append(latents.detach().cpu())
        self._buf_y.append(labels.detach().cpu())
        while sum(t.shape[0] for t in self._buf_z) >= self.shard_size:
            z, y = torch.cat(self._buf_z), torch.cat(self._buf_y)
            self._write_shard(z[: self.shard_size], y[: self.shard_size])
            self._buf_z, self._buf_y = [z[self.shard_size:]], [y[self.shard_size:]]

    def finish(self, meta: dict) -> Path:
        """Write the last partial shard and index.json (`meta` adds vae, scaling_factor, shift_factor,
        image_size, class_names, ...); returns the index path."""
        if self._buf_z and sum(t.shape[0] for t in self._buf_z):
            self._write_shard(torch.cat(self._buf_z), torch.cat(self._buf_y))
        self._buf_z, self._buf_y = [], []
        if not self.shards:
            raise UserError("no latents were written")
        with safe_open(str(self.root / self.shards[0]["file"]), framework="pt") as f:
            sl = f.get_slice("latents")
            shape, dtype = sl.get_shape()[1:], sl.get_dtype()
        index = {"format": FORMAT, "version": VERSION, **meta,
                 "latent_shape": list(shape), "dtype": {"F16": "float16", "F32": "float32", "BF16": "bfloat16"}.get(dtype, dtype),
                 "num_items": self.num_done, "shards": self.shards, "settings": self.settings}
        _atomic_write_json(self.root / INDEX, index)
        (self.root / PROGRESS).unlink()
        return self.root / INDEX
