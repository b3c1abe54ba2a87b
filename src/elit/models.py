"""The ELIT wrapper around a backbone adapter, its config, and the model presets.

Data path: x, t, y -> embed -> head blocks -> Read -> core blocks (latents) -> Write -> tail blocks
-> final layer. With `elit=False` the same class is the plain backbone (all blocks on all tokens),
so baselines and ELIT models share one code path.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from elit.backbones import BACKBONES
from elit.interface import InterfaceSettings, LatentInterface, check_grid


@dataclass
class ModelConfig:
    backbone: str = "dit"
    input_size: int = 32                # latent height = width the model is built for
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000             # 0: unconditional; else one extra null row = null_class_id
    class_dropout_prob: float = 0.1     # used by the trainer (labels -> null) for guidance
    learn_sigma: bool = False           # DiT checkpoints: 2*C outputs, the first C are the prediction
    qk_norm: bool = True                # the paper uses QK-norm and RoPE in every block
    rope: bool = True
    rope_theta: float = 10000.0
    pos_embed: str = "none"             # "sincos" (fixed absolute, as DiT) or "none" (RoPE only)
    time_scale: float = 1000.0          # sinusoid input = time_scale * t, t in [0, 1]
    # What the output means: "velocity" (rectified flow, v = eps - x0; our models and SiT) or
    # "epsilon" (a converted DiT: noise under DiT's discrete VP schedule; our samplers refuse it).
    prediction: str = "velocity"
    # ---- ELIT
    elit: bool = True
    head_depth: int = 2
    tail_depth: int = 2
    window: list[int] | None = None     # tokens per window per axis; None: 16 groups at input_size
    latents_per_group: int | None = None  # J; None: tokens per window (K = N at full budget)
    min_budget: int | None = None       # J_min; None: max(1, J // 16) (1 at 256px, 4 at 512px)
    interface_qk_norm: str = "full"
    interface_mlp_bias: bool = False
    read_adaln_chunks: int = 6
    write_norm: bool = True
    window_pos: bool = True
    window_pos_in_residual: bool = False
    latent_pos: str = "rope"            # "rope", "learned" or "none"
    latent_pos_table_size: int | None = None
    write_sees_dropped: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.input_size // self.patch_size,) * 2

    def resolved_window(self) -> tuple[int, ...]:
        if self.window is not None:
            return tuple(self.window)
        # 16 groups per image at the build resolution (the paper's main setting).
        return tuple(max(1, g // 4) for g in self.grid)

    def resolved_latents_per_group(self) -> int:
        """J, the full budget: tokens per window unless set."""
        return self.latents_per_group or math.prod(self.resolved_window())

    def resolved_min_budget(self) -> int:
        """J_min: J / 16 unless set (1 at 256px, 4 at 512px)."""
        return self.min_budget or max(1, self.resolved_latents_per_group() // 16)

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; available: {sorted(BACKBONES)}")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.prediction not in ("velocity", "epsilon"):
            raise ValueError(f"prediction must be 'velocity' or 'epsilon', got {self.prediction!r}")
        if self.pos_embed not in ("sincos", "none"):
            raise ValueError(f"pos_embed must be 'sincos' or 'none', got {self.pos_embed!r}")
        if not self.elit:
            return
        if self.head_depth < 0 or self.tail_depth < 0 or self.head_depth + self.tail_depth >= self.depth:
            raise ValueError(f"head_depth {self.head_depth} + tail_depth {self.tail_depth} must leave at least "
                             f"one core block of the {self.depth}")
        if self.latent_pos == "rope" and not self.rope:
            raise ValueError("latent_pos='rope' needs rope=True; use latent_pos='learned' or 'none' without RoPE")


class ELITModel(nn.Module):
    """An elastic-budget diffusion transformer: `model(x, t, y, budget=...)` -> velocity.

    x (B, C, H, W); t (B,) float in [0, 1] with t = 1 pure noise; y (B,) int class labels
    (`model.null_class_id` for the unconditional pass); budget: latents kept per group (int in
    `model.budgets`), a float fraction of J in (0, 1] (floored), or None for the full budget.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.backbone = BACKBONES[config.backbone](config)
        self.interface = None
        if config.elit:
            window = config.resolved_window()
            J = config.resolved_latents_per_group()
            G = math.prod(g // w for g, w in zip(config.grid, window))
            self.interface = LatentInterface(InterfaceSettings(
                dim=config.hidden_size, num_heads=config.num_heads, window=window, latents_per_group=J,
                min_budget=config.resolved_min_budget(), qk_norm=config.interface_qk_norm,
                mlp_bias=config.interface_mlp_bias, read_adaln_chunks=config.read_adaln_chunks,
                write_norm=config.write_norm, window_pos=config.window_pos,
                window_pos_in_residual=config.window_pos_in_residual, latent_pos=config.latent_pos,
                latent_pos_table_size=config.latent_pos_table_size or G * J,
                write_sees_dropped=config.write_sees_dropped))
        self.grad_checkpointing = False
        self.initialize_weights()

    # ------------------------------------------------------------------ introspection
    @property
    def budgets(self) -> list[int]:
        """Valid budgets (latents kept per group); empty for a plain (non-ELIT) model."""
        return self.interface.budgets if self.interface is not None else []

    @property
    def latents_per_group(self) -> int | None:
        return self.interface.latents_per_group if self.interface is not None else None

    @property
    def null_class_id(self) -> int | None:
        emb = getattr(self.backbone, "y_embedder", None)
        return emb.null_class_id if emb is not None else None

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def layout(self) -> tuple[range, range, range]:
        """Block indices of head, core and tail."""
        depth = self.backbone.depth
        if self.interface is None:
            return range(depth), range(depth, depth), range(depth, depth)
        h, t = self.config.head_depth, self.config.tail_depth
        return range(h), range(h, depth - t), range(depth - t, depth)

    def resolve_budget(self, budget) -> int | None:
        if self.interface is None:
            if budget is not None:
                raise ValueError("this model has no latent interface (a plain backbone); budget must be None")
            return None
        return self.interface.resolve_budget(budget)

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x, t, y):
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % cfg.patch_size or x.shape[-1] % cfg.patch_size:
            raise ValueError(f"x's height and width {tuple(x.shape[-2:])} must be multiples of the patch "
                             f"size {cfg.patch_size}")
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must be a scalar or have shape ({B},), got {tuple(t.shape)}")
        if cfg.num_classes > 0:
            if y is None:
                raise ValueError("y is required for a class-conditional model; pass model.null_class_id "
                                 "for the unconditional pass")
            y = torch.as_tensor(y, device=x.device)
            if y.shape != (B,) or y.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"y must be an integer tensor of shape ({B},), got {tuple(y.shape)} {y.dtype}")
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes=0); pass y=None")
        return t, y

    def _block(self, index, h, state, rope):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self.backbone.run_block, index, h, state, rope, use_reentrant=False)
        return self.backbone.run_block(index, h, state, rope)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, budget=None) -> torch.Tensor:
        kept = self.resolve_budget(budget)
        t, y = self._check_inputs(x, t, y)
        bb = self.backbone
        state = bb.embed(x, t, y)
        if self.interface is not None:  # fail before any block runs if the windows do not fit
            check_grid(state.grid, self.interface.window)
        spatial_rope = bb.rope(bb.spatial_coordinates(state.grid), x.device)
        head, core, tail = self.layout()
        h = state.tokens
        for i in head:
            h = self._block(i, h, state, spatial_rope)
        if self.interface is not None:
            latents, grouped = self.interface.read_latents(h, state.grid, state.cond, kept)
            B, G, _, D = latents.shape
            seq = latents[:, :, :kept].reshape(B, G * kept, D)
            latent_rope = None
            if self.interface.settings.latent_pos == "rope":
                latent_rope = bb.rope(self.interface.latent_coordinates(state.grid, kept), x.device)
            seq = bb.enter_core(seq, state)
            for i in core:
                seq = self._block(i, seq, state, latent_rope)
            seq = bb.exit_core(seq, state)
            h = self.interface.write_tokens(grouped, seq.reshape(B, G, kept, D), latents, state.grid)
        for i in tail:
            h = self._block(i, h, state, spatial_rope)
        return bb.finish(h, state)

    def initialize_weights(self) -> None:
        self.backbone.initialize_weights()
        if self.interface is not None:
            self.interface.initialize_weights()


# ---------------------------------------------------------------------- presets
_SIZES = {  # name: (hidden, depth, heads, head_depth, tail_depth)
    "S": (384, 12, 6, 2, 2),
    "B": (768, 12, 12, 2, 2),     # paper's ablation default 2-8-2
    "L": (1024, 24, 16, 4, 4),    # 4-16-4: 67% of blocks in the core, as the paper's rule
    "XL": (1152, 28, 16, 4, 4),   # paper: 4-20-4
}


def _presets() -> dict[str, dict]:
    presets = {}
    for size, (d, depth, heads, hd, td) in _SIZES.items():
        for p in (2, 4, 8):
            base = dict(hidden_size=d, depth=depth, num_heads=heads, patch_size=p)
            presets[f"DiT-{size}/{p}"] = dict(base, elit=False)
            presets[f"ELIT-DiT-{size}/{p}"] = dict(base, elit=True, head_depth=hd, tail_depth=td)
    return presets


MODEL_PRESETS: dict[str, dict] = _presets()


def list_models() -> list[str]:
    return list(MODEL_PRESETS)


def create_model(name: str | None = None, **overrides) -> ELITModel:
    """Build a preset (see `list_models()`), with any ModelConfig field overridden by keyword."""
    if name is None:
        fields = {}
    elif name in MODEL_PRESETS:
        fields = dict(MODEL_PRESETS[name])
    else:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_PRESETS)}")
    fields.update(overrides)
    return ELITModel(ModelConfig.from_dict(fields))
