"""The backbone adapter protocol: how ELIT embeds, splits and calls a block stack.

An adapter says how to turn (x, t, y) into image tokens, a side stream and constants (`embed`), how
to call block i (`run_block`), what the core needs around the latents (`core_context`,
`enter_core` / `exit_core`), and how to turn the final tokens back into an image (`finish`). The
ELIT wrapper (elit.model.wrapper) owns the head / core / tail split and the latent interface; an
adapter never knows whether it is elastic.

State travels functionally, never stashed on the module or mutated in place:
    h     (B, L, D)  the image stream: spatial tokens in the head and tail, latents in the core
    side  any pytree the adapter owns: U-ViT's long skips (a tuple, pushed and popped by returning
          a new one), its time/class tokens, an MM-DiT's text stream; None when unused
    ctx   a frozen Context of constants for one stage (condition, rotary table; an adapter that needs
          more, e.g. a text mask, subclasses Context with typed fields)
so `torch.utils.checkpoint` can re-run any block in backward and see exactly its forward inputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from elit.model.layers import rope_frequencies
from elit.model.positions import LatentPositions
from elit.errors import UserError


@dataclass(frozen=True)
class BackboneArgs:
    """Constructor arguments every backbone shares; each adapter subclasses this with its own."""
    name: ClassVar[str] = ""
    input_size: int = 32               # latent height = width the model is built for
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12                    # blocks in the stack (ELIT splits them head / core / tail)
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000            # 0: unconditional; else one extra null row = null_class_id
    time_scale: float = 1000.0         # sinusoid input = time_scale * t, t in [0, 1]
    # What the output means: "velocity" (rectified flow, v = eps - x0; our models and SiT) or
    # "epsilon" (converted DiT / U-ViT: noise under a discrete VP schedule; our samplers refuse it).
    prediction: str = "velocity"

    def __post_init__(self):
        for f in ("input_size", "in_channels", "patch_size", "hidden_size", "depth", "num_heads"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{f} must be a positive integer, got {v!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise UserError(f"num_classes must be an integer >= 0 (0 = unconditional), got {self.num_classes!r}")
        if self.input_size % self.patch_size:
            raise UserError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise UserError(f"hidden size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not self.mlp_ratio > 0:
            raise UserError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.prediction not in ("velocity", "epsilon"):
            raise UserError(f"prediction must be 'velocity' or 'epsilon', got {self.prediction!r}")

    @property
    def patch(self) -> tuple[int, ...]:
        """Patch size per axis of the input grid: (p, p) for images."""
        return (self.patch_size,) * 2

    @property
    def grid(self) -> tuple[int, ...]:
        """Token grid at the build size."""
        return tuple(s // p for s, p in zip(self.input_shape()[1:], self.patch))

    def input_shape(self, input_size: int | None = None) -> tuple[int, ...]:
        """Shape of one input (and one sample's noise) at `input_size` (default: the build size)."""
        size = input_size or self.input_size
        return (self.in_channels, size, size)

    def default_window(self) -> tuple[int, ...]:
        """Windows giving 16 groups at the build size (the paper's main setting)."""
        return tuple(max(1, g // 4) for g in self.grid)

    @property
    def uses_rope(self) -> bool:
        return False

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CoreLayout:
    """The latents the core runs on: `groups` groups of `kept` latents each, group-major, their
    positions as the interface decided them (elit.model.positions), and the window (tokens per axis)
    each group came from (for adapters that pool per-token constants per window, e.g. Wan's)."""
    groups: int
    kept: int
    positions: LatentPositions = LatentPositions()
    window: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Context:
    """Constants of one forward call for the blocks of one stage (spatial, or the latent core). An
    adapter with more constants (a text mask, attention kwargs) subclasses it with typed fields and
    derives the core's with dataclasses.replace, so the subclass travels into the core."""
    cond: torch.Tensor | None            # (B, D) conditioning vector (time + class); drives the Read's adaLN
    grid: tuple[int, ...]                # token grid of this input
    rope: Any = None                     # rotary (cos, sin) for this stage's tokens, or None
    core: CoreLayout | None = None       # in the core: the latents' layout; None in head and tail


class Backbone(nn.Module):
    """Base adapter. Subclasses set `args_class`, build `blocks`, and implement embed/finish."""
    args_class: ClassVar[type[BackboneArgs]] = BackboneArgs
    # True when the adapter holds pretrained weights it did not create: the wrapper then
    # initialises only the latent interface (init policy).
    wraps_pretrained: bool = False
    # What y is: "label" (class ids, or None for num_classes = 0) or "text" (a TextCondition).
    condition_kind: ClassVar[str] = "label"
    blocks: nn.ModuleList

    def __init__(self, args: BackboneArgs):
        super().__init__()
        self.args = args
        self.hidden_size, self.num_heads = args.hidden_size, args.num_heads

    # ------------------------------------------------------------------ rules checked at config time
    @classmethod
    def check_layout(cls, args: BackboneArgs, head: int, tail: int) -> None:
        """Refuse an ELIT split this backbone cannot run (e.g. skips across the interface)."""

    @classmethod
    def token_positions(cls, args: BackboneArgs) -> bool:
        """Can latents take their tokens' positions in the core (latent_pos="tokens")?"""
        return args.uses_rope

    @classmethod
    def analytic_flops(cls, args: BackboneArgs, grid: tuple[int, ...], block_tokens: list[int],
                       groups: int | None = None) -> float:
        """FLOPs (2 x MACs) of one image's forward outside the latent interface, block i running on
        block_tokens[i] image/latent tokens (the adapter adds any tokens of its own); `groups` is G
        when the core runs on latents (block_tokens[i] = G * kept there)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the data path
    @property
    def depth(self) -> int:
        return len(self.blocks)

    def check_input(self, x: torch.Tensor) -> None:
        a = self.args
        axes = len(a.patch)
        names = "(B, C, H, W)" if axes == 2 else "(B, C, T, H, W)"
        if x.dim() != 2 + axes or x.shape[1] != a.in_channels:
            raise UserError(f"x must have shape {names} with C = {a.in_channels}, got {tuple(x.shape)}")
        if any(s % p for s, p in zip(x.shape[2:], a.patch)):
            raise UserError(f"x's sizes {tuple(x.shape[2:])} must be multiples of the patch size "
                            f"{a.patch if axes > 2 else a.patch_size}")
        if not x.is_floating_point():
            raise UserError(f"x must be a floating-point tensor, got {x.dtype}")

    def input_shape(self, input_size: int | None = None) -> tuple[int, ...]:
        """Shape of one input (and of one sample's noise) at `input_size` (default: the build size)."""
        return self.args.input_shape(input_size)

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None):
        """-> (h (B, N, D) raster-order image tokens, side, Context for the spatial stages)."""
        raise NotImplementedError

    def run_block(self, index: int, h: torch.Tensor, side, ctx: Context):
        """-> (h, side) after block `index`."""
        return self.blocks[index](h, ctx.cond, ctx.rope), side

    def core_context(self, ctx: Context, layout: CoreLayout) -> Context:
        """The core's constants: the stage's context with the latents' rotary angles and the layout."""
        return dataclasses.replace(ctx, rope=self.latent_rope(ctx, layout), core=layout)

    def latent_rope(self, ctx: Context, layout: CoreLayout):
        """The one hook for latent positions: the latents' rotary angles from what the interface
        gives (layout.positions), the angles of the tokens they sit on, or angles at their (slot,
        group) coordinates; None when they carry no rotary position."""
        positions = layout.positions
        if positions.token_index is not None:
            return tuple(r.index_select(0, positions.token_index.to(r.device)) for r in ctx.rope)
        if positions.coords is not None:
            return self.rope(positions.coords, ctx)
        return None

    def enter_core(self, seq: torch.Tensor, side, ctx: Context):
        """What enters the core: the kept latents (B, G*j, D) and the side stream."""
        return seq, side

    def exit_core(self, seq: torch.Tensor, side, ctx: Context):
        return seq, side

    def finish(self, h: torch.Tensor, side, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ the condition y
    def check_condition(self, y, batch: int, device):
        """Validate the condition of a forward call and return it on `device`. Class labels here
        (the range check is the wrapper's, batched with t's); text backbones override this."""
        num_classes = self.args.num_classes
        if num_classes > 0:
            if y is None:
                raise UserError("y is required for a class-conditional model; pass model.null_class_id "
                                "for the unconditional pass")
            y = torch.as_tensor(y, device=device)
            if y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32):
                raise UserError(f"y must be an integer tensor of shape ({batch},), got {tuple(y.shape)} {y.dtype}")
        elif y is not None:
            raise UserError("this model is unconditional (num_classes=0); pass y=None")
        return y

    def example_condition(self, batch: int, device=None):
        """A condition of the right kind and shape (values arbitrary), e.g. for FLOP counting."""
        return torch.zeros(batch, dtype=torch.long, device=device) if self.args.num_classes > 0 else None

    # ------------------------------------------------------------------ hooks used around the model
    @property
    def null_class_id(self) -> int | None:
        return self.args.num_classes if self.args.num_classes > 0 else None

    def null_condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The unconditional counterpart of condition y (for guidance)."""
        if self.null_class_id is None:
            raise UserError("this model is unconditional: it has no null condition for guidance")
        return torch.full_like(y, self.null_class_id)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """The embedding of t that modulates the blocks (TeaCache measures how fast it moves)."""
        raise NotImplementedError(f"{type(self).__name__} exposes no time embedding")

    def shard_units(self) -> list[nn.Module]:
        """Modules FSDP2 shards one by one (then the root holds the rest)."""
        return list(self.blocks)

    def initialize_weights(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers
    def rope(self, coords: torch.Tensor, ctx_or_device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rotary angles for tokens at integer coords (L, axes), or None without RoPE."""
        if not self.args.uses_rope:
            return None
        device = ctx_or_device.cond.device if isinstance(ctx_or_device, Context) else ctx_or_device
        return rope_frequencies(coords.to(device), self.hidden_size // self.num_heads, self.args.rope_theta)

    @staticmethod
    def spatial_coordinates(grid: tuple[int, ...], device=None) -> torch.Tensor:
        """(N, axes) integer coordinates of the raster-ordered spatial tokens. Made on `device`: a
        copy from the host every forward would be a sync on a GPU (and break CUDA-graph capture)."""
        mesh = torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def transformer_block_flops(L: int, d: int, hidden: int, adaln: bool = True) -> float:
    """One transformer block on L tokens: qkv 6Ld^2 + out proj 2Ld^2 + attention (QK^T and AV)
    4L^2d + MLP 4Ldh, plus the adaLN linear 12d^2 (per image) for adaLN-Zero blocks."""
    return 8 * L * d * d + 4 * L * L * d + 4 * L * d * hidden + (12 * d * d if adaln else 0)


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make an adapter available under its args' name."""
    name = cls.args_class.name
    if not name or name in BACKBONES:
        raise UserError(f"backbone name {name!r} is empty or taken")
    BACKBONES[name] = cls
    return cls
