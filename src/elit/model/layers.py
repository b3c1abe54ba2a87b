"""Building blocks shared by every backbone: attention, adaLN-Zero block, embedders, RoPE.

Shapes: B batch, L sequence length, D width, H heads. Attention always goes through
`F.scaled_dot_product_attention`, so flash / memory-efficient kernels are used where available.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from elit.errors import UserError


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (B, D) modulation broadcast over every token axis of x."""
    while shift.dim() < x.dim():
        shift, scale = shift.unsqueeze(-2), scale.unsqueeze(-2)
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """x / (rms(x) + eps) * scale. The eps sits outside the root, as in the authors' Read/Write."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(-1, keepdim=True).sqrt()
        return (x.float() / (rms + self.eps)).to(x.dtype) * self.scale


# ----------------------------------------------------------------------------- RoPE
def rope_frequencies(coords: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """Axial rotary embedding for tokens at integer coordinates.

    coords: (L, A) positions along A axes (e.g. (row, col), or (slot, group row, group col)).
    The head_dim/2 rotation pairs are split evenly across the axes; leftover pairs get frequency 0
    (they are not rotated). Returns (cos, sin), each (L, head_dim // 2), float32.
    """
    length, axes = coords.shape
    pairs = head_dim // 2
    per_axis = pairs // axes
    if per_axis == 0:
        raise UserError(f"head_dim {head_dim} is too small for RoPE over {axes} axes")
    inv_freq = theta ** (-torch.arange(per_axis, dtype=torch.float32, device=coords.device) / per_axis)
    angles = coords.float().unsqueeze(-1) * inv_freq  # (L, A, per_axis)
    angles = angles.reshape(length, axes * per_axis)
    if axes * per_axis < pairs:
        angles = F.pad(angles, (0, pairs - axes * per_axis))
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate (first half, second half) pairs of x (..., L, head_dim) by the angles in rope."""
    cos, sin = rope
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- attention
class SelfAttention(nn.Module):
    """Multi-head self-attention with optional per-head QK RMSNorm and RoPE."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise UserError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    """Multi-head cross-attention (queries from x, keys/values from context), used by Read and Write.

    qk_norm: "full" applies RMSNorm to q and k over the full width before the head split (the
    authors' Read/Write), "head" per head, "none" not at all.
    Leading axes are free: x (..., Lq, D), context (..., Lk, D); Read/Write pass (B, G, ., D) so
    attention never crosses a group.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: str = "full", bias: bool = True):
        super().__init__()
        if qk_norm not in ("full", "head", "none"):
            raise UserError(f"qk_norm must be 'full', 'head' or 'none', got {qk_norm!r}")
        self.num_heads, self.head_dim, self.qk_norm = num_heads, dim // num_heads, qk_norm
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=bias)
        norm_dim = dim if qk_norm == "full" else self.head_dim
        self.q_norm = RMSNorm(norm_dim) if qk_norm != "none" else nn.Identity()
        self.k_norm = RMSNorm(norm_dim) if qk_norm != "none" else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-2, -3)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.q_proj(x)
        k, v = self.kv_proj(context).chunk(2, dim=-1)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        lead = q.shape[:-3]  # SDPA wants at most one batch axis on some backends
        out = F.scaled_dot_product_attention(q.flatten(0, -4) if lead else q,
                                             k.flatten(0, -4) if lead else k,
                                             v.flatten(0, -4) if lead else v)
        out = out.reshape(*lead, *out.shape[-3:]).transpose(-2, -3).flatten(-2)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear. gelu="tanh" (DiT, ELIT) or "none" (exact erf GELU, as U-ViT's timm Mlp)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, gelu: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.gelu))


# ----------------------------------------------------------------------------- DiT parts
class PatchEmbed(nn.Module):
    """Non-overlapping patches -> width D (a strided conv): an int p or (p, p) gives (B, D, H/p, W/p);
    (pt, p, p) a Conv3d over (B, C, T, H, W) video."""

    def __init__(self, in_channels: int, dim: int, patch_size):
        super().__init__()
        patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
        conv = nn.Conv2d if len(patch) == 2 else nn.Conv3d
        self.proj = conv(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT): shift/scale/gate for attention, then for the MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 cond_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # cond_dim: the condition's width when it differs from the block's (HDiT's wide bottleneck)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).unsqueeze(1).chunk(6, -1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), rope)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a Linear to the pixels of one patch (patch_elements x C)."""

    def __init__(self, dim: int, patch_elements: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_elements * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) times -> (B, dim) float32 features [cos(t w_k), sin(t w_k)], w_k = 1e4^(-k / (dim/2)),
    the layout of DiT, ADM and U-ViT (an odd dim gets a zero last column)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of (time_scale * t) -> MLP. Sinusoid layout [cos, sin], max period 1e4.

    Our models take t in [0, 1]; time_scale=1000 gives the sinusoid DiT's resolution. Converted
    SiT/ELIT-SiT checkpoints use time_scale=1 (they feed t raw), converted DiT ones 1000.
    """
    FREQ_DIM = 256

    def __init__(self, dim: int, freq_dim: int = FREQ_DIM, time_scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.time_scale = freq_dim, time_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoid(t.float() * self.time_scale, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra row, `null_class_id` = num_classes, for guidance.

    Class dropout is not done here: the trainer replaces labels by `null_class_id` with its own
    seeded generator, so forward has no hidden randomness.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class_id(self) -> int:
        return self.num_classes

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (MAE recipe, as in DiT): (grid_h*grid_w, dim), raster order.

    Channels [0:dim/2] encode the column index and [dim/2:dim] the row index; each half is
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim/4)).
    """
    if dim % 4:
        raise UserError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                                torch.arange(grid_w, dtype=torch.float64), indexing="ij")

    def encode(pos):
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()
