"""FDD features: DINOv2 ViT-L/14, our own short implementation that loads the official checkpoint
(facebookresearch/dinov2 `dinov2_vitl14_pretrain.pth`) by its own key names:
cls_token, pos_embed (1, 1+37*37, 1024), mask_token, patch_embed.proj.*, blocks.{i}.{norm1,
attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}.*, norm.*.

dgm-eval protocol: RGB image -> PIL bicubic resize to 224x224 (torchvision's Resize on a PIL image
is PIL's resize) -> [0, 1] -> ImageNet mean/std -> CLS token after the final LayerNorm (1024-d).
224/14 = 16x16 patches, so the 37x37 position table is resized as DINOv2 does it: bicubic with
scale factor (16 + 0.1)/37 (the +0.1 guards floor() against round-off).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics.images import to_rgb
from elit.errors import MissingInputError, UserError

HUB_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
VITL14 = dict(embed_dim=1024, depth=24, num_heads=16, patch_size=14, img_size=518)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1, self.ls2 = LayerScale(dim), LayerScale(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):  # (B,3,H,W) -> (B, H/p * W/p, dim)
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone, inference only; `forward` returns the normalised CLS token."""

    def __init__(self, embed_dim=1024, depth=24, num_heads=16, patch_size=14, img_size=518, mlp_ratio=4.0):
        super().__init__()
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, embed_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused at inference; kept for strict loading
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        m = int(math.sqrt(n))
        if h == w == m:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()
        patch_pos = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)
        # A scale factor (not an output size) as in DINOv2, since it also sets the sampling grid.
        patch_pos = F.interpolate(patch_pos, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic")
        assert patch_pos.shape[-2:] == (h, w)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.interpolate_pos_embed(h, w)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


def _unwrap_state_dict(sd: dict) -> dict:
    for key in ("model", "state_dict", "teacher"):
        if key in sd and isinstance(sd[key], dict) and "cls_token" not in sd:
            sd = sd[key]
    return {k.removeprefix("backbone."): v for k, v in sd.items()}


def load_dinov2_weights(model: DinoVisionTransformer, weights: str | None = None) -> str:
    """Load official DINOv2 weights into `model`; return where they came from.

    Order: `weights` path, env ELIT_DINOV2_WEIGHTS, the torch.hub cache, a torch.hub download
    (skipped when HF_HUB_OFFLINE / ELIT_OFFLINE is set).
    """
    path = weights or os.environ.get("ELIT_DINOV2_WEIGHTS")
    if path:
        if not os.path.isfile(path):
            raise MissingInputError(f"DINOv2 weights {path} not found")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        source = path
    else:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(HUB_URL))
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("ELIT_OFFLINE") == "1"
        if not os.path.isfile(cached) and offline:
            raise MissingInputError(_missing_msg(cached))
        try:
            sd = torch.hub.load_state_dict_from_url(HUB_URL, map_location="cpu", weights_only=True)
        except Exception as e:  # no network, proxy, ...: the user needs the same advice
            raise MissingInputError(_missing_msg(cached) + f" (download failed: {e})") from e
        source = HUB_URL
    missing, unexpected = model.load_state_dict(_unwrap_state_dict(sd), strict=False)
    if missing or unexpected:
        raise UserError(f"{source} is not a DINOv2 checkpoint of this size: missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]} (register-token variants are not supported)")
    return source


def _missing_msg(cached: str) -> str:
    return ("DINOv2 ViT-L/14 weights not found: pass --dinov2-weights FILE or set ELIT_DINOV2_WEIGHTS to "
            f"dinov2_vitl14_pretrain.pth ({HUB_URL}), or put it at {cached}")


class DINOv2Features(FeatureExtractor):
    """1024-d DINOv2 ViT-L/14 CLS features (dgm-eval protocol), the FDD network.

    weights: a path, None (env / hub, see `load_dinov2_weights`) or "random" (tests and timing only:
    the numbers then mean nothing, and the extractor's name says so).
    """

    dim = 1024

    def __init__(self, weights: str | None = None, batch_size: int = 32, device="cpu", config: dict | None = None,
                 resolution: int = 224):
        super().__init__(batch_size, device)
        cfg = dict(VITL14, **(config or {}))
        self.model = DinoVisionTransformer(**cfg).eval()
        self.dim = cfg["embed_dim"]
        self.resolution = resolution
        if weights == "random":
            tag = "RANDOM-WEIGHTS"
        else:
            tag = "official"
            self.source = load_dinov2_weights(self.model, weights)
        self.model.to(self.device)
        arch = "vitl14" if config is None else "custom-" + "-".join(f"{k}{v}" for k, v in sorted(cfg.items()))
        self.name = f"dinov2-{arch}-{tag}/cls/pil-bicubic-{resolution}"
        self.protocol = (f"DINOv2 ViT-L/14 ({tag}) CLS after final norm, {self.dim}-d; gray->RGB, PIL bicubic resize "
                         f"to {resolution}x{resolution}, ImageNet mean/std (dgm-eval)")
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B,C,H,W) -> uint8 (B,C,r,r) with PIL bicubic, channel by channel (PIL resizes RGB
        channels independently, so this equals resizing the RGB image)."""
        r = self.resolution
        if x.shape[-2:] == (r, r):
            return x
        out = np.empty((x.shape[0], x.shape[1], r, r), np.uint8)
        for i, img in enumerate(x.numpy()):
            for c, ch in enumerate(img):
                out[i, c] = np.asarray(Image.fromarray(ch).resize((r, r), Image.BICUBIC))
        return torch.from_numpy(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_rgb(self._resize(x.cpu())).float().div(255)
        x = ((x - self.mean) / self.std).to(self.device)
        return self.model(x)
