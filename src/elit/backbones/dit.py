"""DiT (Peebles & Xie): patch embed, adaLN-Zero blocks on all tokens, adaLN final layer.

Options beyond the original: per-head QK RMSNorm and 2-D RoPE (the ELIT paper uses both in every
backbone), and `pos_embed="none"` to rely on RoPE alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from elit.backbones.base import Backbone, ForwardState, register_backbone
from elit.layers import DiTBlock, PatchEmbed, FinalLayer, LabelEmbedder, TimestepEmbedder, sincos_pos_embed_2d


@register_backbone("dit")
class DiTBackbone(Backbone):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.hidden_size, self.num_heads = D, cfg.num_heads
        self.patch_size, self.in_channels = cfg.patch_size, cfg.in_channels
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.use_rope, self.rope_theta = cfg.rope, cfg.rope_theta
        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(D, time_scale=cfg.time_scale)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D) if cfg.num_classes > 0 else None
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, cfg.patch_size, self.out_channels)

    def embed(self, x, t, y) -> ForwardState:
        h = self.x_embedder(x)                      # (B, D, H/p, W/p)
        grid = tuple(h.shape[-2:])
        tokens = h.flatten(2).transpose(1, 2)       # (B, N, D), raster order
        if self.cfg.pos_embed == "sincos":
            tokens = tokens + sincos_pos_embed_2d(self.hidden_size, *grid).to(tokens)
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y)
        return ForwardState(tokens=tokens, cond=c.to(tokens.dtype), grid=grid)

    def finish(self, h, state) -> torch.Tensor:
        out = self.final_layer(h, state.cond)       # (B, N, p*p*C)
        (gh, gw), p, C = state.grid, self.patch_size, self.out_channels
        out = out.reshape(-1, gh, gw, p, p, C)
        return torch.einsum("nhwpqc->nchpwq", out).reshape(-1, C, gh * p, gw * p)

    def initialize_weights(self) -> None:
        # DiT's recipe: xavier linears, zero biases, zero adaLN gates and a zero output layer.
        def basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
