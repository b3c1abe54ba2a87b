"""FLUX (diffusers' `FluxTransformer2DModel`) as an ELIT backbone.

Facts from diffusers' transformer_flux.py that the adapter relies on:
- input: the pipeline's latents packed 2x2, (B, (H/2)(W/2), 4C), as Qwen-Image's; `x_embedder` is
  a Linear over them, `proj_out` returns the same packing;
- time: the pipeline passes t in [0, 1] (t = 1 noise, our convention) and the model multiplies it
  (and the distilled models' `guidance`) by 1000 before its sinusoidal embedding;
- text: `context_embedder` over the T5 embeddings; the pooled CLIP vector joins the time embedding;
  no text mask: every text token is attended to;
- positions: one rotary table over [text ; image] from ids (0, row, col) of the image tokens and
  zeros for the text (`pos_embed(cat(txt_ids, img_ids))` -> (cos, sin));
- the stack is 19 double-stream blocks (`transformer_blocks`, image and text with their own weights)
  then 38 single-stream blocks (`single_transformer_blocks`, which concatenate [text ; image] inside
  and split them again); both kinds are called `block(hidden_states, encoder_hidden_states, temb,
  image_rotary_emb, joint_attention_kwargs)` -> (text, image).

ELIT's placement (a choice the paper does not make for FLUX): the adapter walks one list of all 57
blocks, so `head_depth` and `tail_depth` count blocks over the whole stack and the core may span the
switch from double- to single-stream blocks (the default, 8 and 8 of 57 as Qwen-Image's 8 of 60,
puts the Read after double block 8 and the Write before single block 30). Both kinds take the kept
latents where they take image tokens: a double block gives them the image weights, a single block
concatenates [full text ; latents]. The text stream passes every block at full length. In the core
each latent takes the rotary angles of the token it sits on (latent_pos "tokens", the pretrained
default), the text keeps its own.

Not supported (refused with an error): ControlNet residuals, IP-Adapter image embeddings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from elit.errors import UserError
from elit.model.backbones.base import BackboneArgs, Context, register_backbone
from elit.model.backbones.mmdit import PooledTextBackbone, check_grid_size, check_rope_axes
from elit.model.backbones.qwenimage import pack, unpack
from elit.model.condition import TextCondition


@dataclass(frozen=True)
class FluxArgs(BackboneArgs):
    """FLUX's geometry. Defaults: FLUX.1-dev at 1024px (128x128 latents, 64x64 = 4096 tokens)."""
    name: ClassVar[str] = "flux"
    input_size: int = 128              # latent height = width the windows and FLOP counts assume
    in_channels: int = 16              # latent channels C (diffusers' in_channels is 4C, packed 2x2)
    patch_size: int = 2
    hidden_size: int = 3072            # heads x head dim
    depth: int = 57                    # double-stream + single-stream blocks
    double_blocks: int = 19            # the first `double_blocks` of the stack are double-stream
    num_heads: int = 24
    num_classes: int = 0               # text-conditioned
    time_scale: float = 1.0            # the model multiplies t by 1000 itself
    out_channels: int = 16
    joint_attention_dim: int = 4096
    pooled_projection_dim: int = 768
    guidance_embeds: bool = False      # the guidance-distilled models (FLUX.1-dev) embed a guidance scale
    guidance: float = 3.5              # the scale elit's own signature feeds such a model
    axes_dims_rope: tuple = (16, 56, 56)
    text_tokens: int = 512             # T5 tokens the FLOP counts assume (FLUX.1-dev's max_sequence_length)

    def __post_init__(self):
        object.__setattr__(self, "axes_dims_rope", tuple(int(a) for a in self.axes_dims_rope))
        super().__post_init__()
        if self.num_classes != 0 or self.patch_size != 2:
            raise UserError("FLUX takes text (num_classes=0) and 2x2 packed latents (patch_size=2)")
        if not 0 <= self.double_blocks <= self.depth:
            raise UserError(f"double_blocks must lie in 0..depth ({self.depth}), got {self.double_blocks}")
        check_rope_axes(self)

    @property
    def uses_rope(self) -> bool:
        return True

    def diffusers_config(self) -> dict:
        return dict(patch_size=1, in_channels=4 * self.in_channels, out_channels=4 * self.out_channels,
                    num_layers=self.double_blocks, num_single_layers=self.depth - self.double_blocks,
                    attention_head_dim=self.hidden_size // self.num_heads, num_attention_heads=self.num_heads,
                    joint_attention_dim=self.joint_attention_dim, pooled_projection_dim=self.pooled_projection_dim,
                    guidance_embeds=self.guidance_embeds, axes_dims_rope=self.axes_dims_rope)

    @classmethod
    def from_transformer(cls, transformer, input_size: int = 128, text_tokens: int = 512) -> "FluxArgs":
        c = transformer.config
        if c["patch_size"] != 1 or c["in_channels"] % 4:
            raise UserError(f"expected 2x2 packed latents (patch_size=1, in_channels = 4 x latent channels), got "
                            f"patch_size={c['patch_size']}, in_channels={c['in_channels']}")
        out = c.get("out_channels") or c["in_channels"]
        return cls(input_size=input_size, in_channels=c["in_channels"] // 4, out_channels=out // 4,
                   hidden_size=c["num_attention_heads"] * c["attention_head_dim"],
                   depth=c["num_layers"] + c["num_single_layers"], double_blocks=c["num_layers"],
                   num_heads=c["num_attention_heads"], joint_attention_dim=c["joint_attention_dim"],
                   pooled_projection_dim=c["pooled_projection_dim"], guidance_embeds=bool(c["guidance_embeds"]),
                   axes_dims_rope=tuple(c["axes_dims_rope"]), text_tokens=text_tokens)


@dataclass(frozen=True)
class FluxContext(Context):
    """FLUX's constants: the text length (the rotary table covers [text ; image]), the pipeline's
    attention kwargs, and whether to unpack the output (elit's signature) or leave it packed."""
    text_tokens: int = 0
    attention_kwargs: Any = None
    unpack: bool = False


def image_ids(grid, device=None) -> torch.Tensor:
    """(h*w, 3) ids (0, row, col) of the packed image tokens, raster order, as FluxPipeline makes them."""
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1).float()


@register_backbone
class FluxBackbone(PooledTextBackbone):
    args_class = FluxArgs
    diffusers_class = "FluxTransformer2DModel"
    family = "FLUX"
    attention_kwargs_name = "joint_attention_kwargs"   # FluxPipeline calls cond and uncond apart

    @property
    def blocks(self):
        tr = self.transformer
        return [*tr.transformer_blocks, *tr.single_transformer_blocks]

    # ------------------------------------------------------------------ embed
    def time_embedding(self, t):
        tt = self.transformer.time_text_embed
        return tt.timestep_embedder(tt.time_proj(t * 1000))

    # ------------------------------------------------------------------ embed
    def embed(self, x, t, y):
        grid = (x.shape[2] // 2, x.shape[3] // 2)
        guidance = None
        if self.args.guidance_embeds:
            guidance = torch.full((x.shape[0],), self.args.guidance, device=x.device)
        h, text, ctx = self._embed(pack(x), y, t * self.args.time_scale, guidance, image_ids(grid, x.device),
                                   grid, None)
        return h, text, dataclasses.replace(ctx, unpack=True)

    def embed_call(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None,
                   img_ids=None, txt_ids=None, guidance=None, joint_attention_kwargs=None,
                   controlnet_block_samples=None, controlnet_single_block_samples=None,
                   controlnet_blocks_repeat=False):
        """FluxTransformer2DModel.forward's arguments (return_dict is the caller's) -> embedded."""
        if controlnet_block_samples is not None or controlnet_single_block_samples is not None:
            raise UserError("ControlNet residuals are not supported by the elastic model")
        kwargs = self.attention_kwargs(joint_attention_kwargs, refuse=("ip_adapter_image_embeds",))
        if encoder_hidden_states is None or pooled_projections is None or img_ids is None:
            raise UserError("FLUX needs encoder_hidden_states, pooled_projections and img_ids")
        if self.args.guidance_embeds and guidance is None:
            raise UserError("this FLUX model is guidance-distilled: pass guidance (FluxPipeline does)")
        img_ids = img_ids[0] if img_ids.dim() == 3 else img_ids
        grid = (int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1)   # one host read per call
        if not torch.equal(img_ids.to(torch.float32), image_ids(grid, img_ids.device)):
            raise UserError("img_ids must be the packed latents' raster grid (0, row, col), as FluxPipeline makes "
                            "them; other layouts are not supported by the elastic model")
        cond = TextCondition(encoder_hidden_states, pooled=pooled_projections)
        return self._embed(hidden_states, cond, timestep, guidance, img_ids, grid, kwargs)

    def _embed(self, packed, cond, timestep, guidance, img_ids, grid, attention_kwargs):
        tr = self.transformer
        check_grid_size(grid, packed.shape[1], "img_ids")
        h = tr.x_embedder(packed)
        timestep = timestep.to(h.dtype) * 1000
        if guidance is None:
            temb = tr.time_text_embed(timestep, cond.pooled)
        else:
            temb = tr.time_text_embed(timestep, guidance.to(h.dtype) * 1000, cond.pooled)
        text = tr.context_embedder(cond.embeds)
        txt_ids = torch.zeros(text.shape[1], 3, device=img_ids.device, dtype=img_ids.dtype)
        rope = tr.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
        return h, text, FluxContext(cond=temb, grid=grid, rope=rope, text_tokens=text.shape[1],
                                    attention_kwargs=attention_kwargs)

    # ------------------------------------------------------------------ blocks
    def run_block(self, index, h, text, ctx):
        text, h = self.blocks[index](hidden_states=h, encoder_hidden_states=text, temb=ctx.cond,
                                     image_rotary_emb=ctx.rope, joint_attention_kwargs=ctx.attention_kwargs)
        return h, text

    def latent_rope(self, ctx, layout):
        """The [text ; latents] table for the core: the text keeps its rows; each latent takes the
        rows of the token it sits on, or the angles at (slot, group row, group col) as ids, or none."""
        T, positions = ctx.text_tokens, layout.positions
        out = []
        for table in ctx.rope:
            text, image = table[:T], table[T:]
            if positions.token_index is not None:
                image = image.index_select(0, positions.token_index.to(image.device))
            elif positions.coords is not None:
                image = self.transformer.pos_embed(positions.coords.to(image.device).float())[len(out)].to(table.dtype)
            else:   # a unit rotation: cos 1, sin 0
                image = torch.full((layout.groups * layout.kept, table.shape[1]), float(not out), dtype=table.dtype,
                                   device=table.device)
            out.append(torch.cat([text, image]))
        return tuple(out)

    def finish(self, h, text, ctx):
        tr = self.transformer
        out = tr.proj_out(tr.norm_out(h, ctx.cond))
        return unpack(out, ctx.grid) if ctx.unpack else out

    # ------------------------------------------------------------------ cost
    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        d, text, N = args.hidden_size, args.text_tokens, grid[0] * grid[1]
        total = 2 * N * 4 * args.in_channels * d + 2 * text * args.joint_attention_dim * d   # x / context embedders
        time_mlps = 2 if args.guidance_embeds else 1
        total += time_mlps * 2 * (256 * d + d * d) + 2 * (args.pooled_projection_dim * d + d * d)
        total += 4 * d * d + 2 * N * d * 4 * args.out_channels                                # norm_out, proj_out
        for i, L in enumerate(block_tokens):
            total += (double_block_flops if i < args.double_blocks else single_block_flops)(L, text, d)
        return total


def double_block_flops(image: int, text: int, d: int) -> float:
    """One double-stream block: both streams' adaLN (6d each), q/k/v/out projections and 4x MLPs on
    every token, and one joint attention over [text ; image]."""
    L = image + text
    return 2 * 2 * 6 * d * d + 8 * L * d * d + 4 * L * L * d + 16 * L * d * d


def single_block_flops(image: int, text: int, d: int) -> float:
    """One single-stream block on [text ; image]: its adaLN (3d), q/k/v, the 4x MLP input, the joint
    attention, and the output projection over [attention ; MLP] (5d -> d)."""
    L = image + text
    return 2 * 3 * d * d + 6 * L * d * d + 8 * L * d * d + 4 * L * L * d + 10 * L * d * d
