"""The authors' code's interface, kept apart from the paper's so their checkpoints load and compute
what they computed (`elit convert --from authors-elit`), without a flag on the default path.

Two behaviours differ from the paper (ELIT-SPEC 2.5, 6), each an InterfaceConfig field:
- window_pos_in_residual: the within-window positions are added into the token stream itself (the
  Read's keys and the Write's residual), not only into the Read's keys / the Write's queries;
- write_sees_dropped: the Read fills all J latent slots, the dropped ones keep their post-Read values,
  and the Write attends to all J, not to the kept latents only.
(Their 7-chunk Read adaLN and norm-free Write are module shapes: read_adaln_chunks, write_norm.)
"""
from __future__ import annotations

import torch

from elit.model.interface import LatentInterface, group_tokens, ungroup_tokens


class AuthorsCodeInterface(LatentInterface):
    """LatentInterface with the authors' code's Read/Write data path (see the module docstring)."""

    def read_latents(self, tokens, grid, c, kept):
        """-> (latents (B, G, j, D), grouped stream): j = J when the Write sees dropped latents."""
        grouped = group_tokens(tokens, grid, self.window)
        kv = grouped
        if self.settings.window_pos:
            kv = grouped + self.read_pos.to(grouped.dtype)
            if self.settings.window_pos_in_residual:
                grouped = kv
        j = self.latents_per_group if self.settings.write_sees_dropped else kept
        return self.read_slots(kv, c, j, grid), grouped

    def write_tokens(self, grouped, latents, read_latents, grid):
        if self.settings.write_sees_dropped:   # the dropped slots at their post-Read values
            latents = torch.cat([latents, read_latents[:, :, latents.shape[2]:]], dim=2)
        query = grouped
        if self.settings.window_pos:
            query = grouped + self.write_pos.to(grouped.dtype)
            if self.settings.window_pos_in_residual:
                grouped = query
        return ungroup_tokens(self.write(grouped, query, latents), grid, self.window)


def interface_class(settings) -> type[LatentInterface]:
    """The paper's LatentInterface, or this module's when the config asks for the authors' data path."""
    return AuthorsCodeInterface if settings.window_pos_in_residual or settings.write_sees_dropped else LatentInterface
