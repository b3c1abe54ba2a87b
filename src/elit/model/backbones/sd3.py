"""Stable Diffusion 3 / 3.5 (diffusers' `SD3Transformer2DModel`) as an ELIT backbone.

Facts from diffusers' transformer_sd3.py and attention.py the adapter relies on:
- `pos_embed` patchifies (B, C, H, W) and adds a fixed sin-cos table cropped from a
  pos_embed_max_size^2 grid (`cropped_pos_embed(H, W)`); there is no rotary embedding;
- time: the pipeline passes sigma x 1000 (t = 1 noise), so our time_scale is 1000;
  `time_text_embed(timestep, pooled_projections)` is the conditioning vector, `context_embedder`
  projects the text;
- `JointTransformerBlock(hidden_states, encoder_hidden_states, temb, joint_attention_kwargs)`
  returns (text, image); the last block is `context_pre_only` (its text output is None); SD3.5's
  dual-attention blocks add a second attention over the image stream alone; there is no text mask
  (every text token is attended);
- the output is unpatchified to (B, C_out, H, W), the layout elit uses too.

Latent positions in the core: with latent_pos="tokens" (the default of make_elastic) slot s of
window g gets the sin-cos vector of token coarse_to_fine_order(window)[s] of g added after the Read,
the same vector that token received at the input; "learned" adds a learned table instead, "none"
nothing. `skip_layers` (skip-layer guidance) is honoured; ControlNet residuals and IP-Adapter
embeddings are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from elit.errors import UserError
from elit.model.backbones.base import BackboneArgs, Context, register_backbone
from elit.model.backbones.mmdit import PooledTextBackbone
from elit.model.condition import TextCondition


@dataclass(frozen=True)
class SD3Args(BackboneArgs):
    """SD3's geometry; defaults are diffusers' class defaults (128x128 latents = 1024px)."""
    name: ClassVar[str] = "sd3"
    input_size: int = 128
    in_channels: int = 16
    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 18
    num_heads: int = 18
    num_classes: int = 0
    time_scale: float = 1000.0
    sample_size: int = 128             # diffusers' sample_size (sets the sin-cos table's base size)
    out_channels: int = 16
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1152
    pooled_projection_dim: int = 2048
    pos_embed_max_size: int = 96
    dual_attention_layers: tuple = ()
    qk_norm: str | None = None
    text_tokens: int = 333             # 77 CLIP + 256 T5 tokens: the length the FLOP counts assume

    def __post_init__(self):
        object.__setattr__(self, "dual_attention_layers", tuple(int(i) for i in self.dual_attention_layers))
        super().__post_init__()
        if self.num_classes != 0:
            raise UserError("SD3 takes text, not class labels (num_classes=0)")
        if self.caption_projection_dim != self.hidden_size:
            raise UserError(f"caption_projection_dim {self.caption_projection_dim} must equal the width "
                            f"{self.hidden_size} (heads x head dim) for the blocks to run")

    def diffusers_config(self) -> dict:
        return dict(sample_size=self.sample_size, patch_size=self.patch_size, in_channels=self.in_channels,
                    num_layers=self.depth, attention_head_dim=self.hidden_size // self.num_heads,
                    num_attention_heads=self.num_heads, joint_attention_dim=self.joint_attention_dim,
                    caption_projection_dim=self.caption_projection_dim,
                    pooled_projection_dim=self.pooled_projection_dim, out_channels=self.out_channels,
                    pos_embed_max_size=self.pos_embed_max_size, dual_attention_layers=self.dual_attention_layers,
                    qk_norm=self.qk_norm)

    @classmethod
    def from_transformer(cls, transformer, input_size: int | None = None, text_tokens: int = 333) -> "SD3Args":
        c = transformer.config
        if not c.get("pos_embed_max_size"):
            raise UserError("an SD3 transformer without pos_embed_max_size (a cropped sin-cos table) is not supported")
        return cls(input_size=input_size or c["sample_size"], in_channels=c["in_channels"], patch_size=c["patch_size"],
                   hidden_size=c["num_attention_heads"] * c["attention_head_dim"], depth=c["num_layers"],
                   num_heads=c["num_attention_heads"], sample_size=c["sample_size"], out_channels=c["out_channels"],
                   joint_attention_dim=c["joint_attention_dim"], caption_projection_dim=c["caption_projection_dim"],
                   pooled_projection_dim=c["pooled_projection_dim"], pos_embed_max_size=c["pos_embed_max_size"],
                   dual_attention_layers=tuple(c.get("dual_attention_layers") or ()), qk_norm=c.get("qk_norm"),
                   text_tokens=text_tokens)


@dataclass(frozen=True)
class SD3Context(Context):
    """SD3's constants: the pipeline's attention kwargs, the blocks to skip (skip-layer guidance),
    and the latent size (its sin-cos table is cropped to it)."""
    attention_kwargs: Any = None
    skip: frozenset = frozenset()
    size: tuple = ()


@register_backbone
class SD3Backbone(PooledTextBackbone):
    args_class = SD3Args
    diffusers_class = "SD3Transformer2DModel"
    family = "SD3"
    attention_kwargs_name = "joint_attention_kwargs"

    @classmethod
    def batched_cfg(cls, kwargs: dict) -> bool:
        """StableDiffusion3Pipeline batches [uncond ; cond]; its skip-layer-guidance call (which passes
        skip_layers) is a cond-only call."""
        return not kwargs.get("skip_layers")

    # ------------------------------------------------------------------ embed
    def embed(self, x, t, y):
        return self._embed(x, y, t * self.args.time_scale, None, ())

    def embed_call(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None,
                   block_controlnet_hidden_states=None, joint_attention_kwargs=None, skip_layers=None):
        """SD3Transformer2DModel.forward's arguments (return_dict is the caller's) -> embedded."""
        if block_controlnet_hidden_states is not None:
            raise UserError("ControlNet residuals (block_controlnet_hidden_states) are not supported by the "
                            "elastic model")
        kwargs = self.attention_kwargs(joint_attention_kwargs, refuse=("ip_adapter_image_embeds",))
        if encoder_hidden_states is None or pooled_projections is None:
            raise UserError("SD3 needs encoder_hidden_states and pooled_projections")
        cond = TextCondition(encoder_hidden_states, pooled=pooled_projections)
        return self._embed(hidden_states, cond, timestep, kwargs, tuple(skip_layers or ()))

    def _embed(self, x, cond, timestep, attention_kwargs, skip_layers):
        tr, p = self.transformer, self.args.patch_size
        size = tuple(x.shape[-2:])
        h = tr.pos_embed(x).contiguous()
        temb = tr.time_text_embed(timestep, cond.pooled)
        text = tr.context_embedder(cond.embeds)
        return h, text, SD3Context(cond=temb, grid=(size[0] // p, size[1] // p), attention_kwargs=attention_kwargs,
                                   skip=frozenset(skip_layers), size=size)

    # ------------------------------------------------------------------ blocks
    def run_block(self, index, h, text, ctx):
        if index in ctx.skip:
            return h, text
        text, h = self.blocks[index](hidden_states=h, encoder_hidden_states=text, temb=ctx.cond,
                                     joint_attention_kwargs=ctx.attention_kwargs)
        return h, text

    def latent_rope(self, ctx, layout):
        return None           # SD3 has no rotary positions: a latent's position is added (enter_core)

    def enter_core(self, seq, text, ctx):
        """Each latent sitting on a token gets the sin-cos vector that token got at the input."""
        index = ctx.core.positions.token_index
        if index is None:
            return seq, text
        table = self.transformer.pos_embed.cropped_pos_embed(*ctx.size)[0]       # (N, D)
        pos = table.index_select(0, index.to(table.device))
        return (seq + pos).to(seq.dtype), text

    def finish(self, h, text, ctx):
        tr, p, C = self.transformer, self.args.patch_size, self.args.out_channels
        out = tr.proj_out(tr.norm_out(h, ctx.cond))
        gh, gw = ctx.grid
        out = out.reshape(out.shape[0], gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(out.shape[0], C, gh * p, gw * p)

    # ------------------------------------------------------------------ cost
    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        d, text, N, p = args.hidden_size, args.text_tokens, grid[0] * grid[1], args.patch_size
        total = 2 * N * args.in_channels * p * p * d                                 # patch embed
        total += 2 * (256 * d + d * d) + 2 * (args.pooled_projection_dim * d + d * d)   # time + pooled text
        total += 2 * text * args.joint_attention_dim * d                             # context_embedder
        total += 4 * d * d + 2 * N * d * p * p * args.out_channels                   # norm_out, proj_out
        for i, L in enumerate(block_tokens):
            total += joint_block_flops(L, text, d, last=i == args.depth - 1, dual=i in args.dual_attention_layers)
        return total


def joint_block_flops(image: int, text: int, d: int, last: bool, dual: bool) -> float:
    """One JointTransformerBlock. The last block is context_pre_only: the text is only attended to
    (no text output projection, no text MLP, a 2d-wide adaLN); dual blocks add an image-only attention."""
    L = image + text
    total = 2 * d * (9 if dual else 6) * d + 2 * d * (2 if last else 6) * d        # adaLNs
    total += 6 * L * d * d + 2 * image * d * d + (0 if last else 2 * text * d * d)  # q/k/v, outputs
    total += 4 * L * L * d                                                       # joint attention
    total += 16 * image * d * d + (0 if last else 16 * text * d * d)             # MLPs
    if dual:
        total += 8 * image * d * d + 4 * image * image * d
    return total
