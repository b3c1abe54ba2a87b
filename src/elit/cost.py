"""FLOPs of one forward (per image) at each budget: analytic and measured.

Convention: FLOPs = 2 x multiply-adds, attention matrix products included; element-wise ops
(norms, activations, softmax) are not counted, as in DiT's and the ELIT paper's tables.

The analytic count follows ELIT-SPEC 2.7 (paper App. K) with two corrections: the attention
products are counted as 2 x MACs (the App. K table lists them as MACs: 2 N^2 d where the
measured count is 4 N^2 d), and the small terms (patch embed, timestep MLP, adaLN linears, final
layer, skip merges) are included, so analytic and measured agree to well under 1%. Each backbone
adapter counts its own blocks (`Backbone.analytic_flops`); the latent interface is counted here.
The measured count runs the real model on the `meta` device (no memory, no weights) under
`FlopCounterMode`, with SDPA forced to the math backend so that attention is counted.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from elit.errors import UserError
from elit.model import ELITModel, ModelConfig


def built_for(config: ModelConfig, input_size: int | None) -> ModelConfig:
    """The config of a model built for `input_size` (window and J follow it when unset)."""
    if input_size is None or input_size == config.backbone.input_size:
        return config
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise UserError(f"input size must be a positive integer, got {input_size!r}")
    try:
        return config.with_input_size(input_size)
    except ValueError as e:
        raise UserError(f"input size {input_size}: {e}") from None


def with_text_tokens(config: ModelConfig, tokens: int | None) -> ModelConfig:
    """The config whose FLOP counts assume `tokens` text tokens (the length a text model's prompts were
    encoded to: its text stream runs through every block); other configs, or None, as they are."""
    if tokens is None or getattr(config.backbone, "text_tokens", tokens) == tokens:
        return config
    return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, text_tokens=int(tokens)))


def interface_flops(config: ModelConfig, kept: int) -> float:
    """Read + Write of one image at `kept` latents per group."""
    d, N = config.backbone.hidden_size, math.prod(config.grid)
    G, J, s = config.num_groups, config.latents_per_group, config.interface
    j = J if s.write_sees_dropped else kept               # latents the Read computes / Write sees
    # Read: q/out proj on latents, kv proj on tokens, grouped attention, ratio-1 MLP, adaLN
    read = 4 * G * j * d * d + 4 * N * d * d + 4 * j * N * d + 4 * G * j * d * d + 2 * d * s.read_adaln_chunks * d
    # Write: q/out proj on tokens, kv proj on latents, grouped attention, ratio-1 MLP on tokens
    write = 4 * N * d * d + 4 * G * j * d * d + 4 * N * j * d + 4 * N * d * d
    return read + write


def analytic_gflops(config: ModelConfig, budget=None, input_size: int | None = None) -> float:
    """Analytic GFLOPs of one forward of one image; budget as the model takes it (None: full)."""
    cfg = built_for(config, input_size)
    kept = cfg.budget_space.resolve(budget)
    N = math.prod(cfg.grid)
    head, core, tail = cfg.layout()
    tokens = [N] * cfg.backbone.depth
    if cfg.elastic:
        for i in core:
            tokens[i] = cfg.num_groups * kept
    total = cfg.adapter.analytic_flops(cfg.backbone, cfg.grid, tokens, cfg.num_groups)
    if cfg.elastic:
        total += interface_flops(cfg, kept)
    return total / 1e9


def measured_gflops(config: ModelConfig, budget=None, input_size: int | None = None) -> float:
    """GFLOPs counted by torch's FlopCounterMode on a meta-device model (batch 1)."""
    cfg = built_for(config, input_size)
    with torch.device("meta"):
        model = ELITModel(cfg).eval()
        x = torch.empty(1, *model.sample_shape())
        t = torch.empty(1)
        y = model.backbone.example_condition(1)   # labels, None, or a text condition of args.text_tokens
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        model(x, t, y, budget=budget)
    return counter.get_total_flops() / 1e9


def flops_table(config: ModelConfig, budgets, input_size=None, measure=True) -> list[dict]:
    """One row per budget: analytic (and measured) GFLOPs per image, and the fraction of full."""
    cfg = built_for(config, input_size)
    full = analytic_gflops(cfg)
    rows = []
    for b in budgets:
        analytic = analytic_gflops(cfg, b)
        rows.append({"latents_per_group": b, "input_size": cfg.backbone.input_size,
                     "analytic_gflops": round(analytic, 4),
                     "gflops": round(measured_gflops(cfg, b), 4) if measure else round(analytic, 4),
                     "fraction_of_full": round(analytic / full, 4), "measured": measure})
    return rows
