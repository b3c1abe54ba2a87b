"""Synthetic data: deterministic random tensors, for throughput benchmarks and smoke runs only.

Lets `benchmarks/train_throughput.py` measure e.g. ELIT-DiT-XL/2 vs DiT-XL/2 on a GPU machine that
holds no ImageNet latents. Item i is standard normal noise drawn from a generator seeded by
(seed, i), label i % num_classes: the same on every rank, worker and run. Not for training models
anyone should sample from.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from elit.errors import UserError


class SyntheticDataset(Dataset):
    def __init__(self, shape=(4, 32, 32), num_classes: int = 1000, size: int = 100_000, seed: int = 0):
        if len(shape) != 3 or min(shape) < 1:
            raise UserError(f"synthetic data needs a (C, H, W) shape of positive sizes, got {shape}")
        if size < 1 or num_classes < 1:
            raise UserError("synthetic data needs size >= 1 and num_classes >= 1")
        self.image_shape = tuple(int(s) for s in shape)
        self.num_classes, self.size, self.seed = num_classes, size, seed
        self.class_names = [str(i) for i in range(num_classes)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randn(self.image_shape, generator=g), torch.tensor(i % self.num_classes)
