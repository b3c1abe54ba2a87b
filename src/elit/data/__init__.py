"""Data for training and evaluation: Fashion-MNIST, image folders, pre-extracted VAE latents, and a
resumable rank-sharded sampler.

Every dataset yields (x float32, y int64) -- captioned latents (text-latents) yield y = a dict of
text-encoder tensors instead -- and exposes `num_classes` and `image_shape` (C, H, W), or
(C, T, H, W) for clips -- for latents, the latent shape -- so the trainer can check a model config
against its data.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from elit.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist
from elit.data.image_folder import ImageFolder, center_crop_arr
from elit.data.latents import LatentShardDataset, LatentShardWriter
from elit.data.moving_fmnist import MovingFashionMNIST
from elit.data.sampler import InfiniteLoader, ResumableSampler, infinite_batches
from elit.data.synthetic import SyntheticDataset
from elit.data.text_latents import TextLatentDataset, write_text_latents
from elit.data.video_folder import VideoFolder
from elit.errors import UserError

# name -> (constructor, accepted spec keys besides "name")
_DATASETS = {
    "fmnist": (lambda s: FashionMNIST(split=s.get("split", "train"), root=s.get("root")), {"root", "split"}),
    "moving-fmnist": (lambda s: MovingFashionMNIST(split=s.get("split", "train"), frames=s.get("frames", 4),
                                                   size=s.get("size", 32), item_size=s.get("item_size", 20),
                                                   max_speed=s.get("max_speed", 3), length=s.get("length"),
                                                   seed=s.get("seed", 0), root=s.get("root")),
                      {"root", "split", "frames", "size", "item_size", "max_speed", "length", "seed"}),
    "folder": (lambda s: ImageFolder(_need_root(s), image_size=s.get("image_size", 256),
                                     flip=s.get("flip", False), seed=s.get("seed", 0)),
               {"root", "image_size", "flip", "seed"}),
    "video-folder": (lambda s: VideoFolder(_need_root(s), frames=s.get("frames", 8), size=s.get("size", 64),
                                           stride=s.get("stride", 1)), {"root", "frames", "size", "stride"}),
    "latents": (lambda s: LatentShardDataset(_need_root(s), flip=s.get("flip", False), seed=s.get("seed", 0)),
                {"root", "flip", "seed"}),
    "text-latents": (lambda s: TextLatentDataset(_need_root(s)), {"root"}),
    # Benchmarks only: noise with labels, so a GPU machine without datasets can measure throughput.
    "synthetic": (lambda s: SyntheticDataset(shape=s.get("shape", (4, 32, 32)), num_classes=s.get("num_classes", 1000),
                                             size=s.get("size", 100_000), seed=s.get("seed", 0)),
                  {"shape", "num_classes", "size", "seed", "root", "flip"}),  # root/flip: ignored
}
_ALIASES = {"moving_fmnist": "moving-fmnist", "mfmnist": "moving-fmnist", "fashion-mnist": "fmnist", "fashion_mnist": "fmnist", "image_folder": "folder",
            "imagefolder": "folder", "latent_shards": "latents", "text_latents": "text-latents"}


def _need_root(spec: dict) -> str:
    if not spec.get("root"):
        raise UserError(f"data spec for {spec['name']!r} needs a 'root' folder")
    return spec["root"]


def build_dataset(spec: dict) -> Dataset:
    """Build a dataset from a config dict, e.g.
    {"name": "fmnist", "root": None, "split": "train"},
    {"name": "folder", "root": "/data/imagenet/train", "image_size": 256, "flip": True},
    {"name": "latents", "root": "/data/in256-sdvae", "flip": True}.
    Unknown names or keys raise UserError (a typo in a config should not be silently ignored)."""
    spec = dict(spec)
    name = str(spec.get("name", "")).lower()
    name = _ALIASES.get(name, name)
    if name not in _DATASETS:
        raise UserError(f"unknown dataset name {spec.get('name')!r}; valid names: {', '.join(_DATASETS)}")
    make, keys = _DATASETS[name]
    unknown = set(spec) - keys - {"name"}
    if unknown:
        raise UserError(f"data spec for {name!r} has unknown keys {sorted(unknown)}; accepted: {sorted(keys)}")
    spec["name"] = name
    return make(spec)


__all__ = ["CLASS_NAMES", "FashionMNIST", "ImageFolder", "InfiniteLoader", "LatentShardDataset",
           "LatentShardWriter", "MovingFashionMNIST", "ResumableSampler", "VideoFolder", "build_dataset", "center_crop_arr", "infinite_batches",
           "load_fashion_mnist", "SyntheticDataset", "TextLatentDataset",
           "write_text_latents"]
