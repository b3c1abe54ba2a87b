"""The text condition of a text-to-image backbone (an MM-DiT): what `y` is for those models.

Class-conditional models take integer labels; an MM-DiT takes the text encoder's output instead:

    TextCondition(embeds (B, L, D_text), mask (B, L) bool or None, pooled (B, P) or None)

`mask` marks real tokens (Qwen-Image's `encoder_hidden_states_mask`); `pooled` is SD3's
`pooled_projections`. The value behaves like a batch (len, slicing, cat, .to), so samplers, guidance
and trainers treat it the way they treat a label tensor.

The unconditional input (`null()`): the caption dropped, i.e. zero embeddings with every token
masked out (and a zero pooled vector). That is what `elit finetune` trains for caption dropout and
what elit's samplers use for CFG unless given a negative prompt's encoding: a real Qwen-Image or
SD3 was trained with the encoding of an empty prompt instead, so pass that as the negative
condition when sampling one (docs/text-to-image.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from elit.errors import UserError


@dataclass(frozen=True)
class TextCondition:
    embeds: torch.Tensor                     # (B, L, D_text) text encoder hidden states
    mask: torch.Tensor | None = None         # (B, L) True = a real token (None: every token is real)
    pooled: torch.Tensor | None = None       # (B, P) pooled text embedding (SD3)

    def __post_init__(self):
        e = self.embeds
        if not isinstance(e, torch.Tensor) or e.dim() != 3 or not e.is_floating_point():
            raise UserError(f"text embeddings must be a float tensor (B, L, D), got "
                            f"{tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__}")
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(e.shape[:2]):
                raise UserError(f"the text mask must have shape {tuple(e.shape[:2])} (batch, tokens), got "
                                f"{tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")
            if m.dtype != torch.bool:   # Qwen-Image's pipeline passes 0/1 integers
                object.__setattr__(self, "mask", m.to(torch.bool))
        if self.pooled is not None:
            p = self.pooled
            if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[0] != e.shape[0]:
                raise UserError(f"the pooled text embedding must have shape ({e.shape[0]}, P), got "
                                f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")

    # ------------------------------------------------------------------ a batch
    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __iter__(self):
        """One-row conditions (without it, `list(c)` would index past the end for ever: slices never raise)."""
        return (self[i] for i in range(len(self)))

    @property
    def tokens(self) -> int:
        return self.embeds.shape[1]

    def _map(self, fn) -> "TextCondition":
        return TextCondition(fn(self.embeds), None if self.mask is None else fn(self.mask),
                             None if self.pooled is None else fn(self.pooled))

    def __getitem__(self, index) -> "TextCondition":
        """Rows of the batch: an int keeps the batch axis (c[1] has length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda v: v[index])

    def to(self, device=None, dtype=None) -> "TextCondition":
        """Move to `device`; `dtype` casts the float parts (embeddings, pooled), never the mask."""
        return TextCondition(self.embeds.to(device=device, dtype=dtype),
                             None if self.mask is None else self.mask.to(device),
                             None if self.pooled is None else self.pooled.to(device=device, dtype=dtype))

    def repeat(self, n: int) -> "TextCondition":
        """Each row n times in a row (a prompt for n images)."""
        return self._map(lambda v: v.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(parts) -> "TextCondition":
        """Concatenate batches; text lengths must agree (pad with the mask), masks are filled in
        (all True) where one part has none."""
        parts = list(parts)
        if len({p.tokens for p in parts}) != 1:
            raise UserError(f"cannot batch text conditions of different lengths {[p.tokens for p in parts]}; "
                            f"pad them to one length and mark the padding in the mask")
        if len({p.pooled is None for p in parts}) != 1:
            raise UserError("cannot batch text conditions with and without a pooled embedding")
        masks = None
        if any(p.mask is not None for p in parts):
            masks = torch.cat([p.mask if p.mask is not None else
                               torch.ones(p.embeds.shape[:2], dtype=torch.bool, device=p.embeds.device)
                               for p in parts])
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextCondition(torch.cat([p.embeds for p in parts]), masks, pooled)

    def null(self) -> "TextCondition":
        """The dropped caption: zero embeddings, every token masked out, zero pooled vector."""
        return TextCondition(torch.zeros_like(self.embeds),
                             torch.zeros(self.embeds.shape[:2], dtype=torch.bool, device=self.embeds.device),
                             None if self.pooled is None else torch.zeros_like(self.pooled))

    def where(self, drop: torch.Tensor, null: "TextCondition | None" = None) -> "TextCondition":
        """Rows with drop[i] True replaced by `null`'s (default `self.null()`): caption dropout."""
        null = self.null() if null is None else null
        keep = ~drop.to(torch.bool)

        def pick(a, b):
            if a is None and b is None:
                return None
            if a is None or b is None:   # one side has no mask: every token of it is real
                a = torch.ones_like(b) if a is None else a
                b = torch.ones_like(a) if b is None else b
            return torch.where(keep.view(-1, *([1] * (a.dim() - 1))), a, b)
        return TextCondition(pick(self.embeds, null.embeds), pick(self.mask, null.mask), pick(self.pooled, null.pooled))


def batch_condition(parts):
    """Concatenate conditions of one kind: label tensors, TextConditions, or None."""
    parts = list(parts)
    if parts[0] is None:
        return None
    if isinstance(parts[0], TextCondition):
        return TextCondition.cat(parts)
    return torch.cat(parts)
