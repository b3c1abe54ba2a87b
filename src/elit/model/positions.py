"""Where the core's latents are: the one module that decides it (InterfaceConfig.latent_pos).

Four kinds, chosen per model and checked when its config is built:
- "rope": RoPE over (slot, group position...) coordinates (the default when training from scratch
  on a RoPE backbone);
- "tokens": slot s of window g takes the position of token coarse_to_fine_order(window)[s] of g
  (the default when fine-tuning a pretrained model, whose core knows its tokens' positions; needs J
  <= tokens per window and an adapter that can reuse token positions);
- "learned": a table added to the latents after the Read (backbones without RoPE; the authors' code);
- "none".
The interface turns the kind into a LatentPositions value per forward (`latent_positions`), and an
adapter maps whatever that value holds (coordinates to rotate by, or the tokens to borrow positions
from) onto its own position scheme; no other module looks at the kind.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from elit.errors import UserError
from elit.model.grouping import group_tokens

LATENT_POSITIONS = ("rope", "tokens", "learned", "none")


@dataclass(frozen=True)
class LatentPositions:
    """The positions of the core's latents (G groups x kept, group-major) for one forward: at most one
    of `coords` (for RoPE) and `token_index` (borrowed token positions) is set; neither when the
    latents carry their positions in their values (a learned table) or have none."""
    coords: torch.Tensor | None = None        # (G*kept, 1+axes): (slot, group position...)
    token_index: torch.Tensor | None = None   # (G*kept,) raster index of the token each latent sits on


# ----------------------------------------------------------------------------- the rules
def check_kind(kind) -> None:
    """A kind InterfaceConfig may hold: one of LATENT_POSITIONS, or None (the default, resolved later)."""
    if kind is not None and kind not in LATENT_POSITIONS:
        raise UserError(f"latent_pos must be one of {', '.join(map(repr, LATENT_POSITIONS))}, got {kind!r}")


def resolve_latent_pos(kind, *, uses_rope: bool, token_positions: bool, pretrained: bool = False) -> str:
    """`kind`, or the default when it is None (see default_latent_pos)."""
    if kind is None:
        return default_latent_pos(uses_rope=uses_rope, token_positions=token_positions, pretrained=pretrained)
    return kind


def check_latent_pos(kind: str, *, uses_rope: bool, token_positions: bool, backbone: str,
                     latents_per_group: int, window: tuple[int, ...]) -> None:
    """Refuse a kind the model cannot run, at config time."""
    if kind not in LATENT_POSITIONS:
        raise UserError(f"latent_pos must be one of {', '.join(map(repr, LATENT_POSITIONS))}, got {kind!r}")
    if kind == "rope" and not uses_rope:
        raise UserError("latent_pos='rope' needs a backbone with RoPE over (slot, group) coordinates; use "
                        "latent_pos='learned' or 'none' (or 'tokens' where the backbone offers it)")
    if kind == "tokens":
        if not token_positions:
            raise UserError(f"latent_pos='tokens' needs a backbone whose tokens carry positions the core can reuse "
                            f"(RoPE, or an MM-DiT adapter); backbone {backbone!r} has none: use latent_pos='learned' "
                            f"or 'none'")
        if latents_per_group > math.prod(window):
            raise UserError(f"latent_pos='tokens' puts each latent on one token of its window, so J = "
                            f"{latents_per_group} latents per group cannot exceed the {math.prod(window)} tokens of a "
                            f"window; use latent_pos='rope' ((slot, group) coordinates) or 'learned'")


def default_latent_pos(*, uses_rope: bool, token_positions: bool, pretrained: bool) -> str:
    """The kind a model gets when its config names none: a pretrained model's latents borrow the
    positions its blocks were trained with ("tokens", else a learned table); a model trained from
    scratch on a RoPE backbone rotates by (slot, group) coordinates."""
    if pretrained:
        return "tokens" if token_positions else "learned"
    return "rope" if uses_rope else "learned"


def has_table(kind: str) -> bool:
    """Does the interface hold a learned position table for the latents?"""
    return kind == "learned"


def latent_positions(kind: str, grid: tuple[int, ...], window: tuple[int, ...], kept: int,
                     device=None) -> LatentPositions:
    """What the core needs for `kind` at this grid and budget."""
    if kind == "rope":
        return LatentPositions(coords=latent_coordinates(grid, window, kept, device))
    if kind == "tokens":
        return LatentPositions(token_index=latent_token_index(grid, window, kept).to(device))
    return LatentPositions()


# ----------------------------------------------------------------------------- coordinates
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


def latent_coordinates(grid: tuple[int, ...], window: tuple[int, ...], kept: int, device=None) -> torch.Tensor:
    """(G*kept, 1+axes) coordinates (slot, group position...) of the core's latents, made on `device`
    (no host copy per forward)."""
    groups = group_coordinates(grid, window, device)  # (G, axes)
    slots = torch.arange(kept, device=device)
    coords = torch.cat([slots[None, :, None].expand(len(groups), kept, 1),
                        groups[:, None, :].expand(len(groups), kept, groups.shape[1])], dim=-1)
    return coords.reshape(-1, coords.shape[-1])


def latent_token_index(grid: tuple[int, ...], window: tuple[int, ...], kept: int) -> torch.Tensor:
    """(G*kept,) raster index of the token whose position each core latent takes (group-major): slot s
    of window g sits on token coarse_to_fine_order(window)[s] of g."""
    n = math.prod(window)
    if kept > n:
        raise UserError(f"latent_pos='tokens' gives each latent the position of one token of its window, "
                        f"so at most {n} latents per window; got {kept}. Use latent_pos='rope' or 'learned'")
    raster = torch.arange(math.prod(grid)).view(1, -1, 1)
    members = group_tokens(raster, grid, window)[0, :, :, 0]          # (G, n) raster index
    return members[:, coarse_to_fine_order(window)[:kept]].reshape(-1)
