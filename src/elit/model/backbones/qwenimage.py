"""Qwen-Image (diffusers' `QwenImageTransformer2DModel`, >= 0.37) as an ELIT backbone.

Facts from diffusers' transformer_qwenimage.py that the adapter relies on:
- input: the pipeline's latents packed 2x2, (B, (H/2)(W/2), 4C) channel-major within a patch;
  `img_in` is a Linear over them, `proj_out` returns the same packing with `out_channels`;
- time: the pipeline passes sigma in [0, 1] (t = 1 noise, our convention); the model's own
  `Timesteps(scale=1000)` scales it, so our time_scale is 1;
- text: `txt_norm` (RMSNorm) then `txt_in`; the mask marks real tokens and the joint attention builds
  its mask from whatever image length it is given, so a block runs on [full text ; G*j latents];
- positions: MSRoPE, a complex rotary table over (frame, row, col) with centred rows/cols for the
  image (`pos_embed(img_shapes, max_txt_seq_len, device)` -> (image freqs, text freqs));
- a block is `block(hidden_states, encoder_hidden_states, encoder_hidden_states_mask, temb,
  image_rotary_emb=(img, txt), joint_attention_kwargs, modulate_index)` -> (text, image).

Latent positions in the core (interface latent_pos): "tokens" (the default of make_elastic) gives
slot s of window g the MSRoPE angles of token coarse_to_fine_order(window)[s] of g, read from the
image table itself, so the full set of latents sits exactly on the image tokens' positions and any
prefix is spread over the window; "rope" falls back to MSRoPE at (slot, group row, group col) on
the (frame, row, col) axes; "learned" / "none" leave the latents unrotated.

Not supported in this first version (refused with an error): the edit model's modulation index
(`zero_cond_t`), the layered model's 3-D RoPE (`use_layer3d_rope`), several images per sample,
ControlNet residuals, and the `guidance` input (diffusers' own forward cannot run it either).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from elit.errors import UserError
from elit.model.backbones.base import BackboneArgs, Context, register_backbone
from elit.model.backbones.mmdit import MMDiTBackbone, check_grid_size, check_rope_axes
from elit.model.condition import TextCondition

_REFUSED = {"zero_cond_t": "the edit model's modulation index (zero_cond_t)",
            "use_layer3d_rope": "the layered model's 3-D RoPE (use_layer3d_rope)",
            "guidance_embeds": "guidance embeddings (guidance_embeds)"}


@dataclass(frozen=True)
class QwenImageArgs(BackboneArgs):
    """Qwen-Image's geometry. Defaults: the 20B model at 1024px (128x128 latents, 4096 tokens)."""
    name: ClassVar[str] = "qwenimage"
    input_size: int = 128              # latent height = width the windows and FLOP counts assume
    in_channels: int = 16              # latent channels C (diffusers' in_channels is 4C, packed 2x2)
    patch_size: int = 2
    hidden_size: int = 3072            # heads x head dim
    depth: int = 60
    num_heads: int = 24
    num_classes: int = 0               # text-conditioned
    time_scale: float = 1.0            # the model's own Timesteps multiplies sigma by 1000
    out_channels: int = 16
    joint_attention_dim: int = 3584
    axes_dims_rope: tuple = (16, 56, 56)
    use_additional_t_cond: bool = False
    text_tokens: int = 300             # text length the FLOP counts assume

    def __post_init__(self):
        object.__setattr__(self, "axes_dims_rope", tuple(int(a) for a in self.axes_dims_rope))
        super().__post_init__()
        if self.num_classes != 0 or self.patch_size != 2:
            raise UserError("Qwen-Image takes text (num_classes=0) and 2x2 packed latents (patch_size=2)")
        check_rope_axes(self)

    @property
    def uses_rope(self) -> bool:
        return True

    def diffusers_config(self) -> dict:
        return dict(patch_size=2, in_channels=4 * self.in_channels, out_channels=self.out_channels,
                    num_layers=self.depth, attention_head_dim=self.hidden_size // self.num_heads,
                    num_attention_heads=self.num_heads, joint_attention_dim=self.joint_attention_dim,
                    axes_dims_rope=self.axes_dims_rope, use_additional_t_cond=self.use_additional_t_cond)

    @classmethod
    def from_transformer(cls, transformer, input_size: int = 128, text_tokens: int = 300) -> "QwenImageArgs":
        c = transformer.config
        refused = [why for key, why in _REFUSED.items() if c.get(key, False)]
        if refused:
            raise UserError(f"this QwenImageTransformer2DModel uses {', '.join(refused)}, which the elastic "
                            f"version does not support yet")
        if c["patch_size"] != 2 or c["in_channels"] % 4:
            raise UserError(f"expected 2x2 packed latents (patch_size=2, in_channels = 4 x latent channels), got "
                            f"patch_size={c['patch_size']}, in_channels={c['in_channels']}")
        return cls(input_size=input_size, in_channels=c["in_channels"] // 4,
                   hidden_size=c["num_attention_heads"] * c["attention_head_dim"], depth=c["num_layers"],
                   num_heads=c["num_attention_heads"], out_channels=c["out_channels"] or c["in_channels"],
                   joint_attention_dim=c["joint_attention_dim"], axes_dims_rope=tuple(c["axes_dims_rope"]),
                   use_additional_t_cond=bool(c.get("use_additional_t_cond", False)), text_tokens=text_tokens)


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, (H/2)(W/2), 4C), as QwenImagePipeline packs them."""
    B, C, H, W = x.shape
    return x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 2) * (W // 2), 4 * C)


def unpack(tokens: torch.Tensor, grid) -> torch.Tensor:
    """The inverse of `pack`: (B, h*w, 4C) -> (B, C, 2h, 2w)."""
    B, _, D = tokens.shape
    h, w = grid
    return tokens.view(B, h, w, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, D // 4, 2 * h, 2 * w)


@dataclass(frozen=True)
class QwenContext(Context):
    """Qwen-Image's constants: the text mask, the pipeline's attention kwargs, and whether to unpack
    the output into (B, C, H, W) latents (elit's own signature) or leave it packed (diffusers')."""
    mask: torch.Tensor | None = None
    attention_kwargs: Any = None
    unpack: bool = False


@register_backbone
class QwenImageBackbone(MMDiTBackbone):
    args_class = QwenImageArgs
    diffusers_class = "QwenImageTransformer2DModel"
    attention_kwargs_name = "attention_kwargs"    # QwenImagePipeline calls cond and uncond apart

    @classmethod
    def build_transformer(cls, args):
        transformer = super().build_transformer(args)
        rope = transformer.pos_embed
        if rope.pos_freqs.is_meta:
            # Built under torch.device("meta") (elit.load_pretrained): the rotary tables are plain
            # attributes, not buffers, so no state dict restores them; compute them for real.
            with torch.device("cpu"):
                transformer.pos_embed = type(rope)(theta=rope.theta, axes_dim=list(rope.axes_dim),
                                                   scale_rope=rope.scale_rope)
        return transformer

    # ------------------------------------------------------------------ embed
    def embed(self, x, t, y):
        if self.args.use_additional_t_cond:
            raise UserError("this Qwen-Image takes additional_t_cond; call it through elit.make_elastic's "
                            "diffusers signature")
        grid = (x.shape[2] // 2, x.shape[3] // 2)
        h, side, ctx = self._embed(pack(x), y, t * self.args.time_scale, grid, [[(1, *grid)]], None, None)
        return h, side, dataclasses.replace(ctx, unpack=True)

    def embed_call(self, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                   timestep=None, img_shapes=None, guidance=None, attention_kwargs=None,
                   controlnet_block_samples=None, additional_t_cond=None):
        """QwenImageTransformer2DModel.forward's arguments (return_dict is the caller's) -> embedded."""
        if controlnet_block_samples is not None:
            raise UserError("ControlNet residuals (controlnet_block_samples) are not supported by the elastic model")
        if guidance is not None:
            raise UserError("guidance embeddings are not supported (the pipeline passes guidance=None unless "
                            "the model is guidance-distilled)")
        if img_shapes is None or any(len(s) != 1 or s[0][0] != 1 for s in img_shapes) or \
                any(tuple(s[0]) != tuple(img_shapes[0][0]) for s in img_shapes):
            raise UserError(f"the elastic model takes one image per sample, the same size for the batch: "
                            f"img_shapes = [[(1, h, w)]] * batch; got {img_shapes!r}")
        if encoder_hidden_states is None:
            raise UserError("encoder_hidden_states (the prompt embeddings) are required")
        cond = TextCondition(encoder_hidden_states, encoder_hidden_states_mask)
        grid = tuple(img_shapes[0][0][1:])
        return self._embed(hidden_states, cond, timestep, grid, img_shapes, attention_kwargs, additional_t_cond)

    def _embed(self, packed, cond, timestep, grid, img_shapes, attention_kwargs, additional_t_cond):
        tr = self.transformer
        check_grid_size(grid, packed.shape[1], "img_shapes")
        h = tr.img_in(packed)
        timestep = timestep.to(h.dtype)
        text = tr.txt_in(tr.txt_norm(cond.embeds))
        temb = tr.time_text_embed(timestep, h, additional_t_cond)
        rope = tr.pos_embed(img_shapes, max_txt_seq_len=text.shape[1], device=h.device)
        return h, text, QwenContext(cond=temb, grid=grid, rope=rope, mask=cond.mask, attention_kwargs=attention_kwargs)

    # ------------------------------------------------------------------ blocks
    def run_block(self, index, h, text, ctx):
        text, h = self.blocks[index](hidden_states=h, encoder_hidden_states=text,
                                     encoder_hidden_states_mask=ctx.mask, temb=ctx.cond,
                                     image_rotary_emb=ctx.rope, joint_attention_kwargs=ctx.attention_kwargs,
                                     modulate_index=None)
        return h, text

    def latent_rope(self, ctx, layout):
        """MSRoPE (image, text) tables for the core: the text keeps its own; each latent takes its
        token's angles, or angles at its (slot, group row, group col), or none (a unit rotation)."""
        image, text = ctx.rope
        positions = layout.positions
        if positions.token_index is not None:
            image = image.index_select(0, positions.token_index.to(image.device))
        elif positions.coords is not None:
            image = self.axis_freqs(positions.coords, image.device)
        else:
            image = torch.ones(layout.groups * layout.kept, image.shape[1], dtype=image.dtype, device=image.device)
        return image, text

    def axis_freqs(self, coords: torch.Tensor, device) -> torch.Tensor:
        """MSRoPE angles at integer (frame, row, col) coordinates, from the model's own table."""
        rope = self.transformer.pos_embed
        table = rope.pos_freqs.to(device).split([a // 2 for a in rope.axes_dim], dim=1)
        coords = coords.to(device)
        return torch.cat([table[a][coords[:, a]] for a in range(3)], dim=1)

    def finish(self, h, text, ctx):
        tr = self.transformer
        out = tr.proj_out(tr.norm_out(h, ctx.cond))
        return unpack(out, ctx.grid) if ctx.unpack else out

    # ------------------------------------------------------------------ cost
    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        d, text, N = args.hidden_size, args.text_tokens, grid[0] * grid[1]
        total = 2 * N * 4 * args.in_channels * d + 2 * text * args.joint_attention_dim * d   # img_in, txt_in
        total += 2 * (256 * d + d * d)                       # timestep MLP
        total += 4 * d * d + 2 * N * d * 4 * args.out_channels   # norm_out's adaLN, proj_out
        return total + sum(double_stream_block_flops(L, text, d) for L in block_tokens)


def double_stream_block_flops(image: int, text: int, d: int) -> float:
    """One double-stream block: both streams' adaLN (6d each), q/k/v/out projections and 4x MLPs on
    every token, and one joint attention over [text ; image]."""
    L = image + text
    return 2 * 2 * 6 * d * d + 8 * L * d * d + 4 * L * L * d + 16 * L * d * d
