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

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from elit.model.budgets import BudgetSpace
from elit.model.layers import CrossAttention, Mlp
from elit.errors import UserError
from elit.model.grouping import group_tokens, ungroup_tokens
from elit.model import positions as P
from elit.model.positions import LatentPositions, latent_positions


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
    # Positions of the latents in the core (elit.model.positions): "rope", "tokens", "learned", "none";
    # None: the default for the backbone (ModelConfig resolves it; make_elastic and elit finetune
    # pass the pretrained default).
    latent_pos: str | None = None
    latent_pos_table_size: int | None = None  # rows of the learned latent position table (None: G*J)
    write_sees_dropped: bool = False         # authors' code: Write also attends to dropped latents

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(self, "window", tuple(int(w) for w in self.window))
            if not self.window or min(self.window) < 1:
                raise UserError(f"window must be positive token counts per axis, got {list(self.window)}")
        P.check_kind(self.latent_pos)
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
        self.latent_queries = nn.Parameter(torch.empty(space.latents_per_group, dim))
        self.read = Read(dim, num_heads, cfg.qk_norm, cfg.mlp_bias, cfg.read_adaln_chunks)
        self.write = Write(dim, num_heads, cfg.qk_norm, cfg.mlp_bias, cfg.write_norm)
        if cfg.window_pos:
            self.read_pos = nn.Parameter(torch.empty(tokens_per_window, dim))
            self.write_pos = nn.Parameter(torch.empty(tokens_per_window, dim))
        self.register_parameter("latent_pos_embed", nn.Parameter(torch.empty(table_rows, dim))
                                if P.has_table(cfg.latent_pos) else None)

    @property
    def latents_per_group(self) -> int:
        return self.space.latents_per_group

    # -- positions
    def core_positions(self, grid: tuple[int, ...], kept: int, device=None) -> LatentPositions:
        """The positions of the core's latents at this grid and budget (elit.model.positions)."""
        return latent_positions(self.settings.latent_pos, grid, self.window, kept, device)

    def latent_coordinates(self, grid: tuple[int, ...], kept: int, device=None) -> torch.Tensor:
        """(G*kept, 1+axes) (slot, group position...) of the core's latents (positions.latent_coordinates)."""
        return P.latent_coordinates(grid, self.window, kept, device)

    def latent_token_index(self, grid: tuple[int, ...], kept: int) -> torch.Tensor:
        """(G*kept,) raster index of the token each core latent sits on (positions.latent_token_index)."""
        return P.latent_token_index(grid, self.window, kept)

    def _latent_pos_index(self, grid: tuple[int, ...], kept: int, device=None) -> torch.Tensor:
        """Row of the learned latent position table for each (group, slot), shape (G, kept), made on
        `device` (no host copy per forward).

        When J equals the tokens per window, latent (g, s) sits where token s of window g sits, so
        the row is that token's raster index (the authors' convention); otherwise g * J + s.
        """
        # checked with Python ints, not index.max(): that would be a device sync
        needed = P._learned_rows_needed(tuple(grid), self.window, kept, self.latents_per_group)
        if self.latent_pos_embed.shape[0] < needed:
            raise UserError(f"the learned latent position table has {self.latent_pos_embed.shape[0]} rows, "
                            f"too few for a token grid of {grid}")
        return P._learned_index(tuple(grid), self.window, kept, self.latents_per_group, device)

    # -- Read / Write (the paper's; elit.model.authors_compat overrides both for the authors' code)
    def read_latents(self, tokens: torch.Tensor, grid: tuple[int, ...], c: torch.Tensor, kept: int):
        """Spatial tokens (B, N, D) -> (the kept latents (B, G, kept, D), grouped stream for the Write)."""
        grouped = group_tokens(tokens, grid, self.window)     # the wrapper checked the grid (check_grid)
        kv = grouped + self.read_pos.to(grouped.dtype) if self.settings.window_pos else grouped
        return self.read_slots(kv, c, kept, grid), grouped

    def read_slots(self, kv: torch.Tensor, c: torch.Tensor, j: int, grid: tuple[int, ...]) -> torch.Tensor:
        """The first j latent queries of every group, after the Read over `kv` (and the learned
        positions, when the latents have a table)."""
        B, G = kv.shape[:2]
        # index_select, not a slice: a slice of a parameter taken under no_grad is a view that
        # requires grad without a grad_fn, which breaks torch's module tracker (FlopCounterMode).
        rows = torch.arange(j, device=kv.device)
        queries = self.latent_queries.index_select(0, rows).to(kv.dtype).expand(B, G, j, -1)
        latents = self.read(queries, kv, c)
        if self.latent_pos_embed is not None:
            latents = latents + self.latent_pos_embed[self._latent_pos_index(grid, j, latents.device)].to(latents.dtype)
        return latents

    def write_tokens(self, grouped: torch.Tensor, latents: torch.Tensor, read_latents: torch.Tensor,
                     grid: tuple[int, ...]) -> torch.Tensor:
        """Kept latents (B, G, kept, D) after the core -> updated spatial tokens (B, N, D). The Write
        attends to the kept latents only (the paper); `read_latents` is what read_latents returned."""
        query = grouped + self.write_pos.to(grouped.dtype) if self.settings.window_pos else grouped
        return ungroup_tokens(self.write(grouped, query, latents), grid, self.window)

    def initialize_weights(self) -> None:
        nn.init.normal_(self.latent_queries, std=0.02)
        for name in ("read_pos", "write_pos", "latent_pos_embed"):
            if getattr(self, name, None) is not None:
                nn.init.normal_(getattr(self, name), std=0.02)
        nn.init.zeros_(self.read.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.read.adaLN_modulation[-1].bias)
        self.write.zero_init()
