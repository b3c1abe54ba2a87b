"""A fast domain metric: FD-FMNIST, the Frechet distance in the penultimate (128-d) features of a
small CNN trained on Fashion-MNIST. It is NOT FID and not comparable with any published number;
it is a cheap, sensitive signal for the Fashion-MNIST experiments (about 1000x faster than
Inception on CPU).

The weights ship as `elit/assets/fmnist_classifier.safetensors` (config, seed, test accuracy in
its metadata) and `elit train-classifier` regenerates them: seeded and deterministic on CPU for a
given torch version and thread count. The feature network's name carries a hash of the weights,
so references made with another classifier are refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from elit.eval.metrics.base import FeatureExtractor
from elit.errors import MissingInputError, UserError

FEATURE_DIM = 128


class FMNISTNet(nn.Module):
    """32x32 grayscale -> 3 conv stages (16, 32, 64 channels, each halving the size) -> 128 -> 10."""

    def __init__(self, width: int = 16, feature_dim: int = FEATURE_DIM, num_classes: int = 10):
        super().__init__()
        w = width
        self.convs = nn.ModuleList([nn.Conv2d(1, w, 3, padding=1), nn.Conv2d(w, 2 * w, 3, padding=1),
                                    nn.Conv2d(2 * w, 4 * w, 3, padding=1)])
        self.fc = nn.Linear(4 * w * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """float (B,1,32,32) in [-1, 1] -> penultimate features (B, feature_dim)."""
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,28|32,28|32) -> float (B,1,32,32) in [-1, 1], padded like elit.data.FashionMNIST."""
    if x.shape[1] == 3:
        if not (torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])):
            raise UserError("FD-FMNIST takes grayscale images; got RGB images whose channels differ")
        x = x[:, :1]
    if x.shape[-2:] == (28, 28):
        x = F.pad(x, (2, 2, 2, 2))
    elif x.shape[-2:] != (32, 32):
        raise UserError(f"FD-FMNIST takes 28x28 or 32x32 (padded) images; got {tuple(x.shape[-2:])}")
    return x.float().div(127.5).sub(1.0)


def default_weights_path() -> str:
    return str(resources.files("elit") / "assets" / "fmnist_classifier.safetensors")


def load_classifier(path: str | None = None) -> tuple[FMNISTNet, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = path or default_weights_path()
    if not os.path.isfile(path):
        raise MissingInputError(f"Fashion-MNIST classifier weights {path} not found: run `elit train-classifier --out {path}`")
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    net = FMNISTNet(**json.loads(meta.get("config", "{}")))
    net.load_state_dict(load_file(path))
    return net.eval(), meta


class FMNISTFeatures(FeatureExtractor):
    """128-d penultimate features of the shipped Fashion-MNIST CNN (FD-FMNIST; not FID)."""

    def __init__(self, weights: str | None = None, batch_size: int = 256, device="cpu"):
        super().__init__(batch_size, device)
        self.net, self.meta = load_classifier(weights)
        self.net.to(self.device)
        self.dim = self.net.fc.out_features
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in self.net.parameters()))
        self.name = f"fmnist-cnn@{digest.hexdigest()[:12]}/penultimate"
        acc = self.meta.get("test_accuracy", "?")
        self.protocol = (f"FD-FMNIST (NOT FID): penultimate {self.dim}-d features of elit's Fashion-MNIST CNN "
                         f"{self.name.split('/')[0]} (test acc {acc}); 28x28 padded to 32x32, x/127.5-1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(to_input(x).to(self.device))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_input(x).to(self.device))


def train_classifier(out: str, epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     width: int = 16, num_train: int | None = None, log=print) -> dict:
    """Train FMNISTNet on the 60k training images; save weights + metadata to `out` (safetensors).

    Deterministic on CPU: seeded init and shuffling, deterministic algorithms, no augmentation.
    num_train: use only the first N training images (tests).
    """
    from safetensors.torch import save_file
    from elit.data.fashion_mnist import load_fashion_mnist
    torch.manual_seed(seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    xtr, ytr = xtr[:num_train], ytr[:num_train]
    xtr, xte = to_input(xtr.unsqueeze(1)), to_input(xte.unsqueeze(1))
    net = FMNISTNet(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * (len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(len(xtr) // batch_size):  # drop the last partial batch: fixed step count
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate_accuracy(net, xte, yte)
        log(f"epoch {ep + 1}/{epochs}: train loss {total / (len(xtr) // batch_size):.4f}, "
            f"test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")
    torch.use_deterministic_algorithms(was_deterministic)
    meta = dict(config=json.dumps(dict(width=width)), test_accuracy=f"{acc:.4f}", seed=str(seed), epochs=str(epochs),
                batch_size=str(batch_size), lr=str(lr), torch_version=torch.__version__,
                threads=str(torch.get_num_threads()), note="elit FD-FMNIST feature network; NOT an FID network")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out, metadata=meta)
    return dict(test_accuracy=acc, seconds=time.time() - t0, path=out)


@torch.inference_mode()
def evaluate_accuracy(net: FMNISTNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).double().mean())

