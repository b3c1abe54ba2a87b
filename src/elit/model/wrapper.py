"""The ELIT wrapper: a backbone adapter plus the latent interface, split head / core / tail.

Data path: x, t, y -> embed -> head blocks -> Read -> core blocks (latents) -> Write -> tail blocks
-> finish. A config without an interface gives the plain backbone (all blocks on all tokens), so
baselines and ELIT models share one code path.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from elit.model.backbones import Backbone, CoreLayout
from elit.model.budgets import BudgetSpace
from elit.model.config import ModelConfig
from elit.model.authors_compat import interface_class
from elit.model.grouping import check_grid
from elit.errors import UserError


class ELITModel(nn.Module):
    """An elastic-budget diffusion transformer: `model(x, t, y, budget=...)` -> prediction."""

    def __init__(self, config: ModelConfig, backbone: Backbone | None = None):
        """Build from `config`. Pass `backbone` to wrap an adapter that already holds (pretrained)
        weights: it is shared, never copied, and only the latent interface is initialised."""
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be an elit ModelConfig, got {type(config).__name__}")
        if backbone is not None and getattr(backbone, "args", None) != config.backbone:
            raise UserError("the backbone to wrap was built with other arguments than config.backbone; build "
                            "the config from it, e.g. plain.config.override(elit=True, head_depth=..., ...)")
        self.config = config
        self.backbone = backbone if backbone is not None else config.adapter(config.backbone)
        self.budget_space: BudgetSpace = config.budget_space
        self.interface = None
        if config.elastic:
            self.interface = interface_class(config.interface)(
                config.interface, config.backbone.hidden_size, config.backbone.num_heads, config.window,
                self.budget_space, config.latent_table_rows)
        self.grad_checkpointing = False
        # Value checks of t and y cost one host sync per call; the trainer, whose inputs are its
        # own, turns them off.
        self.check_values = True
        # "bf16": every forward runs under bf16 autocast and returns its output in the input's dtype
        # (set by elit._precision.set_model_precision, `--precision`); "fp32": plain.
        self.compute_precision = "fp32"
        self._layout = config.layout()
        self.initialize_weights(backbone=backbone is None and not self.backbone.wraps_pretrained)

    # ------------------------------------------------------------------ introspection
    @property
    def budgets(self) -> list[int]:
        """Valid budgets (latents kept per group); empty for a plain (non-ELIT) model."""
        return self.budget_space.budgets

    @property
    def latents_per_group(self) -> int | None:
        return self.budget_space.latents_per_group

    @property
    def num_classes(self) -> int:
        return self.config.backbone.num_classes

    @property
    def null_class_id(self) -> int | None:
        return self.backbone.null_class_id

    def layout(self) -> tuple[range, range, range]:
        """Block indices of head, core and tail."""
        return self._layout

    def resolve_budget(self, budget) -> int | None:
        """Latents kept per group for `budget` (int, float fraction of J, or None = full)."""
        return self.budget_space.resolve(budget)

    def sample_shape(self, input_size: int | None = None) -> tuple[int, ...]:
        """Shape of one sample (and its noise), e.g. (C, H, W), at `input_size` (default: build size)."""
        return self.backbone.input_shape(input_size)

    def null_condition(self, y):
        """The unconditional counterpart of the condition `y` (for classifier-free guidance)."""
        return self.backbone.null_condition(y)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.backbone.time_embedding(t)

    def shard_units(self) -> list[nn.Module]:
        """Modules to shard one by one under FSDP2 (the root keeps the rest)."""
        return self.backbone.shard_units()

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x, t, y):
        if not isinstance(x, torch.Tensor):
            raise UserError(f"x must be a tensor, got {type(x).__name__}")
        self.backbone.check_input(x)
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise UserError(f"x is {x.dtype} but the model's weights are {weight.dtype}; cast it with "
                             f"x.to({weight.dtype}) (or the model with model.to(dtype))")
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.is_complex() or t.dtype == torch.bool:
            raise UserError(f"t must be real times in [0, 1], got dtype {t.dtype}")
        t = t.to(torch.float32)
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise UserError(f"t must be a scalar or have shape ({B},), got {tuple(t.shape)}")
        num_classes = self.num_classes
        y = self.backbone.check_condition(y, B, x.device)
        if self.check_values and x.device.type != "meta" and not torch.compiler.is_compiling():
            bad_t = ~torch.isfinite(t) | (t < 0) | (t > 1)
            labels = isinstance(y, torch.Tensor)
            bad_y = (y < 0) | (y > num_classes) if labels else torch.zeros_like(bad_t)
            if bool(torch.cat([bad_t, bad_y]).any()):   # one host sync for both checks
                if bool(bad_t.any()):
                    raise UserError(f"t must be finite times in [0, 1] (t = 1 is pure noise), got "
                                     f"{t[bad_t][:4].tolist()}")
                raise UserError(f"class labels must lie in 0..{num_classes - 1}, or {num_classes} for the "
                                 f"null class; got {y[bad_y][:4].tolist()}")
        return t, y

    def _block(self, index, h, side, ctx):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self.backbone.run_block, index, h, side, ctx, use_reentrant=False)
        return self.backbone.run_block(index, h, side, ctx)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, budget=None) -> torch.Tensor:
        """Predict the velocity (or epsilon for converted models, see `config.backbone.prediction`).

        x: (B, C, H, W) noisy input, x_t = (1 - t) x0 + t eps.
        t: (B,) or a scalar, floats in [0, 1]; t = 1 is pure noise, t = 0 data.
        y: (B,) int class labels; `model.null_class_id` for the unconditional pass; None if
           unconditional (num_classes = 0); a TextCondition for text-to-image backbones (MM-DiTs).
        budget: latents kept per group, an int in `model.budgets`; a float in (0, 1] is a fraction
           of J (floored); None is the full budget. Plain backbones take None only.
        Returns a tensor shaped like x (2C channels for learned-sigma DiT checkpoints).
        """
        kept = self.resolve_budget(budget)
        t, y = self._check_inputs(x, t, y)
        if self.compute_precision == "bf16" and not torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                out = self.forward_embedded(self.backbone.embed(x, t, y), kept)
            return out.to(x.dtype)      # the sampler integrates in the input's dtype
        return self.forward_embedded(self.backbone.embed(x, t, y), kept)

    def forward_embedded(self, embedded: tuple, kept: int | None) -> torch.Tensor:
        """The forward after the embedding, for every entry point: `model(x, t, y)` above, and the
        diffusers signature (elit.interop.diffusers embeds with the adapter's `embed_call`).
        embedded: the adapter's (h, side, ctx); kept: a resolved budget (`resolve_budget`).
        Checks this input's token grid against the windows, then head -> Read -> core on `kept`
        latents per group -> Write -> tail, and the adapter's finish."""
        h, side, ctx = embedded
        if self.interface is not None:   # before any block runs
            try:
                check_grid(ctx.grid, self.interface.window)
            except UserError as e:
                size = self.config.backbone.input_size
                raise UserError(f"{e}. This model was built for {size}x{size} inputs; pad or resize to a size the "
                                f"windows fit (Fashion-MNIST's 28x28 images are padded to 32x32 with background: "
                                f"torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1))") from None
        head, core, tail = self._layout
        for i in head:
            h, side = self._block(i, h, side, ctx)
        if self.interface is not None:
            h, side = self._core(h, side, ctx, core, kept)
        for i in tail:
            h, side = self._block(i, h, side, ctx)
        return self.backbone.finish(h, side, ctx)

    def _core(self, h, side, ctx, core, kept):
        """Read -> the core blocks on the kept latents -> Write; returns the spatial stream."""
        latents, grouped = self.interface.read_latents(h, ctx.grid, ctx.cond, kept)
        B, G, _, D = latents.shape
        seq = latents[:, :, :kept].reshape(B, G * kept, D)
        layout = CoreLayout(groups=G, kept=kept, positions=self.interface.core_positions(ctx.grid, kept, h.device),
                            window=self.interface.window)
        core_ctx = self.backbone.core_context(ctx, layout)
        seq, side = self.backbone.enter_core(seq, side, core_ctx)
        for i in core:
            seq, side = self._block(i, seq, side, core_ctx)
        seq, side = self.backbone.exit_core(seq, side, core_ctx)
        h = self.interface.write_tokens(grouped, seq.reshape(B, G, kept, D), latents, ctx.grid)
        return h, side

    def initialize_weights(self, backbone: bool = True) -> None:
        """Fresh weights for the interface, and for the backbone unless it wraps pretrained weights."""
        if backbone:
            self.backbone.initialize_weights()
        if self.interface is not None:
            self.interface.initialize_weights()

    def extra_repr(self) -> str:
        head, core, tail = self._layout
        return (f"backbone={type(self.config.backbone).name}, layout={len(head)}-{len(core)}-{len(tail)}, "
                f"{self.budget_space.describe()}")

