"""The ELIT latent interface: window grouping, latent queries, Read and Write.

Everything ELIT adds to a diffusion transformer lives here (the budget rules in budgets.py). A
backbone's block stack is split into head / core / tail; between head and core the **Read** pulls
each window ("group") of spatial tokens into that group's J latents, the core runs on the first
`budget` latents of every group only, and the **Write** pushes those kept latents back into the
group's tokens.

Tensor layout: spatial tokens (B, N, D) in raster order; grouped tokens (B, G, n, D) with
n = tokens per window; latents (B, G, j, D) with j = the budget (latents kept per group). In the
core, latents are flattened group-major to (B, G*j, D).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from elit.model.budgets import BudgetSpace
from elit.model.layers import CrossAttention, Mlp
from elit.errors import UserError


# ----------------------------------------------------------------------------- grouping
def check_grid(grid: tuple[int, ...], window: tuple[int, ...]) -> None:
    if len(grid) != len(window):
        raise UserError(f"token grid {grid} and window {window} have different numbers of axes")
    bad = [(g, w) for g, w in zip(grid, window) if g % w]
    if bad:
        raise UserError(
            f"the token grid {tuple(grid)} is not divisible into windows of {tuple(window)} tokens; "
            f"use an input whose token grid is a multiple of the window on every axis")


def group_tokens(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]) -> torch.Tensor:
    """(B, N, D) raster tokens -> (B, G, n, D): groups in raster order, tokens raster within a window."""
    B, _, D = x.shape
    axes = len(grid)
    split = [s for g, w in zip(grid, window) for s in (g // w, w)]  # g0, w0, g1, w1, ...
    x = x.reshape(B, *split, D)
    order = [0] + [1 + 2 * a for a in range(axes)] + [2 + 2 * a for a in range(axes)] + [1 + 2 * axes]
    groups = math.prod([g // w for g, w in zip(grid, window)])    # a list, not a generator: torch.compile traces it
    return x.permute(*order).reshape(B, groups, math.prod(window), D)


def ungroup_tokens(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]) -> torch.Tensor:
    """Inverse of group_tokens: (B, G, n, D) -> (B, N, D)."""
    B, D, axes = x.shape[0], x.shape[-1], len(grid)
    counts = [g // w for g, w in zip(grid, window)]
    x = x.reshape(B, *counts, *window, D)
    order = [0] + [v for a in range(axes) for v in (1 + a, 1 + axes + a)] + [1 + 2 * axes]
    return x.permute(*order).reshape(B, math.prod(grid), D)


def coarse_to_fine_order(window: tuple[int, ...]) -> torch.Tensor:
    """The cells of a window (raster indices) in coarse-to-fine order: every prefix is spread over
    the window, and the whole order is a permutation of the window's cells.

    The order is bit-reversed Morton (Z) order over the smallest power-of-two box holding the
    window, with cells outside the window skipped. For a 4x4 window the first 4 cells are the
    stride-2 sub-lattice (0,0), (2,0), (0,2), (2,2); the first 8 add the odd rows; all 16 cover the
    window. A latent slot s takes the position of cell order[s], so at budget j the kept latents sit
    on a spread-out subset of the window, and at full budget (J = cells) exactly on its tokens.
    """
    return torch.tensor(_coarse_to_fine(tuple(int(w) for w in window)), dtype=torch.long)


@functools.lru_cache(maxsize=None)   # computed once per window shape, not at every forward
def _coarse_to_fine(window: tuple[int, ...]) -> tuple[int, ...]:
    bits = max(max(w - 1, 0).bit_length() for w in window)   # bits per axis of the power-of-two box
    axes, total = len(window), len(window) * bits
    cells = []
    for code in range(1 << total):
        rev = int(format(code, f"0{total}b")[::-1], 2) if total else 0
        # de-interleave: bit k of axis a sits at position k * axes + (axes - 1 - a) of the Morton code
        pos = [sum(((rev >> (k * axes + axes - 1 - a)) & 1) << k for k in range(bits)) for a in range(axes)]
        if all(p < w for p, w in zip(pos, window)):
            index = 0
            for p, w in zip(pos, window):
                index = index * w + p
            cells.append(index)
    return tuple(cells)


def group_coordinates(grid: tuple[int, ...], window: tuple[int, ...], device=None) -> torch.Tensor:
    """(G, axes) integer position of every group in the grid of groups, raster order."""
    counts = [g // w for g, w in zip(grid, window)]
    mesh = torch.meshgrid(*[torch.arange(c, device=device) for c in counts], indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def _learned_index(grid: tuple[int, ...], window: tuple[int, ...], kept: int, J: int, device=None) -> torch.Tensor:
    """(G, kept) rows of the learned latent position table (see LatentInterface._latent_pos_index)."""
    if J == math.prod(window):
        raster = torch.arange(math.prod(grid), device=device).view(1, -1, 1)
        return group_tokens(raster, grid, window)[0, :, :kept, 0]
    groups = math.prod([g // w for g, w in zip(grid, window)])
    return torch.arange(groups, device=device)[:, None] * J + torch.arange(kept, device=device)[None]


def _learned_rows_needed(grid: tuple[int, ...], window: tuple[int, ...], kept: int, J: int) -> int:
    """Table rows a (grid, kept) forward reads: one more than _learned_index's largest entry, in
    Python ints (a tensor's max would be a host sync). With J = tokens per window the largest entry
    is token kept-1 of the last window: within a window, raster order is global raster order."""
    if J != math.prod(window):
        return (math.prod([g // w for g, w in zip(grid, window)]) - 1) * J + kept
    local, cell = kept - 1, []
    for w in reversed(window):          # unravel kept-1 in the window, last axis fastest
        local, r = divmod(local, w)
        cell.append(r)
    row = 0
    for g, w, r in zip(grid, window, reversed(cell)):
        row = row * g + (g - w) + r
    return row + 1


# ----------------------------------------------------------------------------- Read / Write
class Read(nn.Module):
    """Latents <- their group's spatial tokens, adaLN-Zero modulated by the condition.

    l = l + gate_a * CrossAttn(q=l, kv=modulate(LN(s), shift_kv, scale_kv))
    l = l + gate_m * MLP(modulate(LN(l), shift_m, scale_m))      (MLP hidden width = D)
    The adaLN linear is zero-initialised, so an untrained Read returns the learned queries.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: str = "full", mlp_bias: bool = False,
                 adaln_chunks: int = 6):
        super().__init__()
        if adaln_chunks < 6:
            raise UserError("the Read's adaLN needs at least 6 chunks")
        self.norm_kv = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads, qk_norm=qk_norm)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, dim, bias=mlp_bias)
        # The authors' code emits a 7th chunk it never uses; `adaln_chunks=7` keeps its weights loadable.
        self.adaln_chunks = adaln_chunks
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, adaln_chunks * dim))

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # latents (B, G, j, D), tokens (B, G, n, D), c (B, D)
        chunks = self.adaLN_modulation(c)[:, None, None].chunk(self.adaln_chunks, dim=-1)
        shift_kv, scale_kv, gate_a, shift_m, scale_m, gate_m = chunks[:6]
        kv = self.norm_kv(tokens) * (1 + scale_kv) + shift_kv
        latents = latents + gate_a * self.attn(latents, kv)
        return latents + gate_m * self.mlp(self.norm_mlp(latents) * (1 + scale_m) + shift_m)


class Write(nn.Module):
    """Spatial tokens <- their group's kept latents; both residual, no conditioning.

    s = s + CrossAttn(q=norm(s + pos), kv=norm(l));  s = s + MLP(norm(s))
    The attention output projection and the MLP's last layer are zero-initialised, so an untrained
    Write is the identity. `norm=False` drops the LayerNorms (the authors' code has none).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: str = "full", mlp_bias: bool = False,
                 norm: bool = True):
        super().__init__()

        def ln():
            return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) if norm else nn.Identity()

        self.norm_q, self.norm_kv, self.norm_mlp = ln(), ln(), ln()
        self.attn = CrossAttention(dim, num_heads, qk_norm=qk_norm)
        self.mlp = Mlp(dim, dim, bias=mlp_bias)

    def forward(self, stream: torch.Tensor, query: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # stream/query (B, G, n, D): the residual stream and the attention query input (stream + pos)
        stream = stream + self.attn(self.norm_q(query), self.norm_kv(latents))
        return stream + self.mlp(self.norm_mlp(stream))

    def zero_init(self) -> None:
        for layer in (self.attn.proj, self.mlp.fc2):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


# ----------------------------------------------------------------------------- the interface
LATENT_POSITIONS = ("rope", "tokens", "learned", "none")


@dataclass(frozen=True)
class InterfaceConfig:
    """How the latent interface is built. None fields derive from the backbone at build size
    (elit.model.config.ModelConfig resolves them): window -> 16 groups, J -> tokens per window,
    J_min -> max(1, J // 16)."""
    window: tuple[int, ...] | None = None    # window shape in tokens, (h, w) or (t, h, w)
    latents_per_group: int | None = None     # J, the full budget
    min_budget: int | None = None            # J_min, the smallest budget
    qk_norm: str = "full"                    # Read/Write QK RMSNorm: "full" width, per "head", or "none"
    mlp_bias: bool = False
    read_adaln_chunks: int = 6               # 7 keeps the authors' checkpoints loadable
    write_norm: bool = True
    window_pos: bool = True                  # learnable within-window position for Read keys / Write queries
    window_pos_in_residual: bool = False     # authors' code adds those positions into the token stream
    # Positions of the latents in the core: "rope" (RoPE over (slot, group coords)), "tokens" (slot s
    # of window g takes the position of token coarse_to_fine_order[s] of g; J <= tokens per window),
    # "learned" (a table), "none".
    latent_pos: str = "rope"
    latent_pos_table_size: int | None = None  # rows of the learned latent position table (None: G*J)
    write_sees_dropped: bool = False         # authors' code: Write also attends to dropped latents

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(self, "window", tuple(int(w) for w in self.window))
            if not self.window or min(self.window) < 1:
                raise UserError(f"window must be positive token counts per axis, got {list(self.window)}")
        if self.latent_pos not in LATENT_POSITIONS:
            raise UserError(f"latent_pos must be one of {', '.join(map(repr, LATENT_POSITIONS))}, "
                            f"got {self.latent_pos!r}")
        if self.qk_norm not in ("full", "head", "none"):
            raise UserError(f"interface qk_norm must be 'full', 'head' or 'none', got {self.qk_norm!r}")
        if self.read_adaln_chunks < 6:
            raise UserError("the Read's adaLN needs at least 6 chunks (read_adaln_chunks >= 6)")
        for name in ("latents_per_group", "min_budget", "latent_pos_table_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"{name} must be a positive integer or None, got {v!r}")


class LatentInterface(nn.Module):
    """Read, Write, the latent queries and positions; built from resolved values (see ModelConfig)."""

    def __init__(self, cfg: InterfaceConfig, dim: int, num_heads: int, window: tuple[int, ...],
                 space: BudgetSpace, table_rows: int):
        super().__init__()
        self.settings, self.window, self.space = cfg, tuple(window), space
        tokens_per_window = math.prod(self.window)
        self.latent_queries = nn.Parameter(torch.empty(space.full, dim))
        self.read = Read(dim, num_heads, cfg.qk_norm, cfg.mlp_bias, cfg.read_adaln_chunks)
        self.write = Write(dim, num_heads, cfg.qk_norm, cfg.mlp_bias, cfg.write_norm)
        if cfg.window_pos:
            self.read_pos = nn.Parameter(torch.empty(tokens_per_window, dim))
            self.write_pos = nn.Parameter(torch.empty(tokens_per_window, dim))
        if cfg.latent_pos == "learned":
            self.latent_pos_embed = nn.Parameter(torch.empty(table_rows, dim))

    @property
    def latents_per_group(self) -> int:
        return self.space.full

    # -- positions
    def latent_coordinates(self, grid: tuple[int, ...], kept: int, device=None) -> torch.Tensor:
        """(G*kept, 1+axes) coordinates (slot, group position...) of the core's latents, for RoPE,
        made on `device` (no host copy per forward)."""
        groups = group_coordinates(grid, self.window, device)  # (G, axes)
        slots = torch.arange(kept, device=device)
        coords = torch.cat([slots[None, :, None].expand(len(groups), kept, 1),
                            groups[:, None, :].expand(len(groups), kept, groups.shape[1])], dim=-1)
        return coords.reshape(-1, coords.shape[-1])

    def latent_token_index(self, grid: tuple[int, ...], kept: int) -> torch.Tensor:
        """(G*kept,) raster index of the token whose position each core latent takes (group-major):
        slot s of window g sits on token coarse_to_fine_order(window)[s] of g (latent_pos="tokens")."""
        n = math.prod(self.window)
        if kept > n:
            raise UserError(f"latent_pos='tokens' gives each latent the position of one token of its window, "
                            f"so at most {n} latents per window; got {kept}. Use latent_pos='rope' or 'learned'")
        raster = torch.arange(math.prod(grid)).view(1, -1, 1)
        members = group_tokens(raster, grid, self.window)[0, :, :, 0]          # (G, n) raster index
        return members[:, coarse_to_fine_order(self.window)[:kept]].reshape(-1)

    def _latent_pos_index(self, grid: tuple[int, ...], kept: int, device=None) -> torch.Tensor:
        """Row of the learned latent position table for each (group, slot), shape (G, kept), made on
        `device` (no host copy per forward).

        When J equals the tokens per window, latent (g, s) sits where token s of window g sits, so
        the row is that token's raster index (the authors' convention); otherwise g * J + s.
        """
        # checked with Python ints, not index.max(): that would be a device sync
        needed = _learned_rows_needed(tuple(grid), self.window, kept, self.latents_per_group)
        if self.latent_pos_embed.shape[0] < needed:
            raise UserError(f"the learned latent position table has {self.latent_pos_embed.shape[0]} rows, "
                            f"too few for a token grid of {grid}")
        return _learned_index(tuple(grid), self.window, kept, self.latents_per_group, device)

    # -- Read / Write
    def read_latents(self, tokens: torch.Tensor, grid: tuple[int, ...], c: torch.Tensor, kept: int):
        """Spatial tokens (B, N, D) -> (latents (B, G, j, D), grouped stream for the Write).

        j = kept, or J when the Write must also see the dropped latents (compatibility mode).
        """
        grouped = group_tokens(tokens, grid, self.window)     # the wrapper checked the grid (check_grid)
        kv = grouped
        if self.settings.window_pos:
            kv = grouped + self.read_pos.to(grouped.dtype)
            if self.settings.window_pos_in_residual:
                grouped = kv
        j = self.latents_per_group if self.settings.write_sees_dropped else kept
        B, G = grouped.shape[:2]
        # index_select, not a slice: a slice of a parameter taken under no_grad is a view that
        # requires grad without a grad_fn, which breaks torch's module tracker (FlopCounterMode).
        rows = torch.arange(j, device=tokens.device)
        queries = self.latent_queries.index_select(0, rows).to(tokens.dtype).expand(B, G, j, -1)
        latents = self.read(queries, kv, c)
        if self.settings.latent_pos == "learned":
            latents = latents + self.latent_pos_embed[self._latent_pos_index(grid, j, latents.device)].to(latents.dtype)
        return latents, grouped

    def write_tokens(self, grouped: torch.Tensor, latents: torch.Tensor, read_latents: torch.Tensor,
                     grid: tuple[int, ...]) -> torch.Tensor:
        """Kept latents (B, G, j, D) -> updated spatial tokens (B, N, D).

        The paper's Write attends to the kept latents only. In compatibility mode the dropped slots
        are filled with their post-Read values (read_latents) and the Write sees all J.
        """
        if self.settings.write_sees_dropped:
            latents = torch.cat([latents, read_latents[:, :, latents.shape[2]:]], dim=2)
        query = grouped
        if self.settings.window_pos:
            query = grouped + self.write_pos.to(grouped.dtype)
            if self.settings.window_pos_in_residual:
                grouped = query
        return ungroup_tokens(self.write(grouped, query, latents), grid, self.window)

    def initialize_weights(self) -> None:
        nn.init.normal_(self.latent_queries, std=0.02)
        for name in ("read_pos", "write_pos", "latent_pos_embed"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=0.02)
        nn.init.zeros_(self.read.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.read.adaLN_modulation[-1].bias)
        self.write.zero_init()
