"""Wan (diffusers' `WanTransformer3DModel`, Wan 2.1 / 2.2 text-to-video) as an ELIT backbone.

Facts from diffusers' transformer_wan.py that the adapter relies on:
- input: video latents (B, C, T, H, W); `patch_embedding` is a Conv3d with kernel = stride =
  patch_size (1, 2, 2), flattened to (B, N, D) tokens in raster order (time slowest); the output is
  `norm_out` modulated by `scale_shift_table` + temb, `proj_out`, and the inverse reshape;
- time: the pipeline passes the scheduler's timestep in [0, 1000] (t = 1000 noise) straight into a
  sinusoid; Wan 2.2 TI2V (`expand_timesteps`) passes one timestep per token, (B, N);
- text: `condition_embedder` projects the UMT5 embeddings once; every block cross-attends to them.
  There is no text mask: WanPipeline zero-pads the embeddings past the prompt's length;
- positions: `rope(x)` gives (cos, sin) tables (1, N, 1, head dim) over (frame, row, col);
- a block is `block(hidden_states, encoder_hidden_states, temb, rotary_emb)` -> hidden_states:
  self-attention on the video tokens, cross-attention to the text, an FFN, modulated by
  `temb` = timestep_proj (B, 6, D) (or (B, N, 6, D) per token).

ELIT's placement: the text is not a stream of its own (no block updates it), so it is a constant of
the forward (the Context), not a side stream: the core blocks run self-attention on the kept
latents and cross-attention to the full text. Only the latents pass the core, so with a
zero-initialised Write the model is exactly head + tail. Windows are 3-D, (t, h, w) tokens. In the
core each latent takes the rotary angles of the token it sits on (latent_pos "tokens", the
pretrained default); Wan's table has no axis for a latent's slot, so latent_pos "rope" is refused.

Per-token timesteps (Wan 2.2 TI2V): head and tail blocks and the output layer take each token's own
modulation, as diffusers does; in the core every latent of a window takes the mean of that window's
tokens' modulation (pooled over the whole window, so it does not depend on the budget and the
prefix property holds); the Read is conditioned on the mean time embedding over all tokens.

Not supported (refused with an error): image conditioning (Wan 2.1 I2V's image encoder:
`image_dim`, `added_kv_proj_dim`, `encoder_hidden_states_image`), `pos_embed_seq_len` (FLF2V).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from elit.errors import UserError
from elit.model.backbones.base import BackboneArgs, Context, register_backbone
from elit.model.backbones.mmdit import MMDiTBackbone
from elit.model.grouping import group_tokens

_REFUSED = {"image_dim": "an image encoder's embeddings (image_dim: Wan 2.1 I2V)",
            "added_kv_proj_dim": "image cross-attention (added_kv_proj_dim: Wan 2.1 I2V)",
            "pos_embed_seq_len": "image position embeddings (pos_embed_seq_len: FLF2V)"}


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, max(1, at_most) + 1) if n % d == 0)


@dataclass(frozen=True)
class WanArgs(BackboneArgs):
    """Wan's geometry. Defaults: Wan2.1-T2V-14B at 480p, 81 frames (21 x 60 x 104 latents, 21 x 30 x 52 tokens)."""
    name: ClassVar[str] = "wan"
    input_size: int = 60               # latent height (480 px / 8)
    width: int = 104                   # latent width (832 px / 8)
    frames: int = 21                   # latent frames (81 frames: 1 + 80 / 4)
    in_channels: int = 16
    patch_size: int = 2                # spatial patch; Wan's patch is (temporal_patch, 2, 2)
    temporal_patch: int = 1
    hidden_size: int = 5120            # heads x head dim
    depth: int = 40
    num_heads: int = 40
    num_classes: int = 0               # text-conditioned
    time_scale: float = 1000.0         # elit's t in [0, 1] -> the scheduler's timestep the model embeds
    out_channels: int = 16
    text_dim: int = 4096               # UMT5 features
    freq_dim: int = 256
    ffn_dim: int = 13824
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024
    text_tokens: int = 512             # UMT5 tokens WanPipeline pads to (the FLOP counts assume it)

    def __post_init__(self):
        super().__post_init__()
        for f in ("width", "frames", "temporal_patch", "out_channels", "text_dim", "freq_dim", "ffn_dim", "text_tokens"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{f} must be a positive integer, got {v!r}")
        if self.num_classes != 0:
            raise UserError("Wan takes text (num_classes=0)")
        if self.width % self.patch_size or self.frames % self.temporal_patch:
            raise UserError(f"frames {self.frames} x width {self.width} are not divisible by the patch "
                            f"({self.temporal_patch}, {self.patch_size}, {self.patch_size})")

    @property
    def joint_attention_dim(self) -> int:
        """The text features, by the name the MM-DiT adapters' condition checks read."""
        return self.text_dim

    @property
    def uses_rope(self) -> bool:
        # Wan rotates by (frame, row, col) only: a latent's (slot, group) coordinates have no axis
        # to go on, so latent_pos "rope" is refused at config time; latents take their tokens' angles.
        return False

    @property
    def patch(self) -> tuple[int, ...]:
        return (self.temporal_patch, self.patch_size, self.patch_size)

    def input_shape(self, input_size: int | None = None) -> tuple[int, ...]:
        """(C, frames, height, width) of one latent clip; `input_size` replaces the height."""
        return (self.in_channels, self.frames, input_size or self.input_size, self.width)

    def default_window(self) -> tuple[int, ...]:
        """Per axis the largest divisor of the token grid up to (2, rows / 4, cols / 4), the video
        DiT's 2 x 4 x 4 windows at 8 x 16 x 16 tokens."""
        t, h, w = self.grid
        return (_largest_divisor(t, 2), _largest_divisor(h, h // 4), _largest_divisor(w, w // 4))

    def diffusers_config(self) -> dict:
        return dict(patch_size=self.patch, num_attention_heads=self.num_heads,
                    attention_head_dim=self.hidden_size // self.num_heads, in_channels=self.in_channels,
                    out_channels=self.out_channels, text_dim=self.text_dim, freq_dim=self.freq_dim,
                    ffn_dim=self.ffn_dim, num_layers=self.depth, cross_attn_norm=self.cross_attn_norm,
                    qk_norm=self.qk_norm, eps=self.eps, rope_max_seq_len=self.rope_max_seq_len)

    @classmethod
    def from_transformer(cls, transformer, input_size: int = 60, width: int = 104, frames: int = 21,
                         text_tokens: int = 512) -> "WanArgs":
        c = transformer.config
        refused = [why for key, why in _REFUSED.items() if c.get(key) is not None]
        if refused:
            raise UserError(f"this WanTransformer3DModel uses {', '.join(refused)}, which the elastic version "
                            f"does not support; text-to-video models (Wan2.1-T2V, Wan2.2-T2V / TI2V) are supported")
        pt, ph, pw = c["patch_size"]
        if ph != pw:
            raise UserError(f"expected a square spatial patch, got patch_size={tuple(c['patch_size'])}")
        return cls(input_size=input_size, width=width, frames=frames, in_channels=c["in_channels"], patch_size=ph,
                   temporal_patch=pt, hidden_size=c["num_attention_heads"] * c["attention_head_dim"],
                   depth=c["num_layers"], num_heads=c["num_attention_heads"],
                   out_channels=c["out_channels"] or c["in_channels"], text_dim=c["text_dim"], freq_dim=c["freq_dim"],
                   ffn_dim=c["ffn_dim"], cross_attn_norm=bool(c["cross_attn_norm"]), qk_norm=c["qk_norm"],
                   eps=float(c["eps"]), rope_max_seq_len=c["rope_max_seq_len"], text_tokens=text_tokens)


@dataclass(frozen=True)
class WanContext(Context):
    """Wan's constants: the projected text every block cross-attends to, the blocks' modulation
    (timestep_proj: (B, 6, D), or (B, N, 6, D) with per-token timesteps; in the core one row per
    latent), and the output layer's time embedding (B, D) or (B, N, D). `cond` (B, D) drives the Read."""
    text: Any = None
    modulation: Any = None
    temb: Any = None


@register_backbone
class WanBackbone(MMDiTBackbone):
    args_class = WanArgs
    diffusers_class = "WanTransformer3DModel"
    attention_kwargs_name = "attention_kwargs"    # WanPipeline calls cond and uncond apart
    geometry = ("input_size", "width", "frames", "text_tokens")

    @property
    def blocks(self):
        return self.transformer.blocks

    @classmethod
    def build_transformer(cls, args):
        transformer = super().build_transformer(args)
        rope = transformer.rope
        if rope.freqs_cos.is_meta:
            # Built under torch.device("meta") (elit.load_pretrained): the rotary tables are
            # non-persistent buffers, so no state dict restores them; compute them for real.
            with torch.device("cpu"):
                transformer.rope = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)
        return transformer

    # ------------------------------------------------------------------ the condition
    def check_condition(self, y, batch, device):
        y = super().check_condition(y, batch, device)
        if y.pooled is not None:
            raise UserError("Wan takes no pooled text embedding; pass TextCondition(embeds, mask) without pooled")
        return y

    def time_embedding(self, t):
        ce = self.transformer.condition_embedder
        return ce.time_embedder(ce.timesteps_proj(t * self.args.time_scale))

    # ------------------------------------------------------------------ embed
    def embed(self, x, t, y):
        # Wan attends to every text token; its pipeline zeroes the padding, so a mask zeroes the
        # masked tokens' embeddings (the dropped caption, TextCondition.null, is all zeros).
        embeds = y.embeds if y.mask is None else y.embeds.masked_fill(~y.mask[..., None], 0)
        return self._embed(x, t * self.args.time_scale, embeds)

    def embed_call(self, hidden_states, timestep=None, encoder_hidden_states=None,
                   encoder_hidden_states_image=None, attention_kwargs=None):
        """WanTransformer3DModel.forward's arguments (return_dict is the caller's) -> embedded. Its
        attention kwargs reach no block (diffusers reads only the LoRA scale, as the wrapper does)."""
        if encoder_hidden_states_image is not None:
            raise UserError("image conditioning (encoder_hidden_states_image, Wan I2V) is not supported by the "
                            "elastic model")
        if encoder_hidden_states is None or timestep is None:
            raise UserError("Wan needs timestep and encoder_hidden_states (the prompt embeddings)")
        return self._embed(hidden_states, timestep, encoder_hidden_states)

    def _embed(self, x, timestep, text):
        tr = self.transformer
        if x.dim() != 5:
            raise UserError(f"Wan takes video latents (B, C, T, H, W), got {tuple(x.shape)}")
        grid = tuple(s // p for s, p in zip(x.shape[2:], self.args.patch))
        rope = tuple(r.to(x.device) for r in tr.rope(x))   # a no-op but for a meta model (measured FLOPs)
        h = tr.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        per_token = timestep.dim() == 2
        if per_token and timestep.shape[1] != h.shape[1]:
            raise UserError(f"per-token timesteps must have one column per video token ({h.shape[1]}), got "
                            f"{tuple(timestep.shape)}")
        temb, modulation, text, _ = tr.condition_embedder(timestep.flatten() if per_token else timestep, text, None,
                                                          timestep_seq_len=timestep.shape[1] if per_token else None)
        modulation = modulation.unflatten(-1, (6, -1))
        return h, None, WanContext(cond=temb.mean(1) if per_token else temb, grid=grid, rope=rope, text=text,
                                   modulation=modulation, temb=temb)

    # ------------------------------------------------------------------ blocks
    def run_block(self, index, h, side, ctx):
        h = self.blocks[index](hidden_states=h, encoder_hidden_states=ctx.text, temb=ctx.modulation,
                               rotary_emb=ctx.rope)
        return h, side

    def core_context(self, ctx, layout):
        core = super().core_context(ctx, layout)
        if ctx.modulation.dim() == 3:
            return core
        # per-token modulation: one row per latent, its window's mean
        B, N, six, D = ctx.modulation.shape
        pooled = group_tokens(ctx.modulation.reshape(B, N, six * D), ctx.grid, layout.window).mean(2)
        rows = pooled.repeat_interleave(layout.kept, dim=1).unflatten(-1, (six, D))
        return dataclasses.replace(core, modulation=rows)

    def latent_rope(self, ctx, layout):
        """Each latent's rows of the (cos, sin) tables: its token's; None (no rotation) for latents
        without token positions ("learned", "none")."""
        positions = layout.positions
        if positions.coords is not None:
            raise UserError("Wan's rotary axes are (frame, row, col): latent_pos 'rope' has no axis for the slot; "
                            "use 'tokens' (the default) or 'learned'")
        if positions.token_index is None:
            return None
        return tuple(r.index_select(1, positions.token_index.to(r.device)) for r in ctx.rope)

    def finish(self, h, side, ctx):
        tr, temb = self.transformer, ctx.temb
        if temb.dim() == 3:   # per-token timesteps
            shift, scale = (tr.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (tr.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        h = tr.proj_out((tr.norm_out(h.float()) * (1 + scale) + shift).type_as(h))
        (T, H, W), (pt, ph, pw) = ctx.grid, self.args.patch
        h = h.reshape(h.shape[0], T, H, W, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return h.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    # ------------------------------------------------------------------ cost
    @classmethod
    def analytic_flops(cls, args, grid, block_tokens, groups=None) -> float:
        """Per image, one timestep per clip (per-token timesteps add the time MLPs per token)."""
        d, T, N = args.hidden_size, args.text_tokens, grid[0] * grid[1] * grid[2]
        patch = args.in_channels * args.temporal_patch * args.patch_size ** 2
        total = 2 * N * patch * d                                           # patch embedding
        total += 2 * (args.freq_dim * d + d * d) + 2 * d * 6 * d            # time MLP, timestep_proj
        total += 2 * T * (args.text_dim * d + d * d)                        # text projection
        total += 2 * N * d * args.out_channels * args.temporal_patch * args.patch_size ** 2   # proj_out
        return total + sum(block_flops(L, T, d, args.ffn_dim) for L in block_tokens)


def block_flops(L: int, text: int, d: int, ffn: int) -> float:
    """One Wan block on L tokens: self-attention (q/k/v/out projections, QK^T and AV over L), cross-
    attention (q/out on L, k/v on the text, which every block projects again), the FFN."""
    self_attention = 8 * L * d * d + 4 * L * L * d
    cross_attention = 4 * L * d * d + 4 * text * d * d + 4 * L * text * d
    return self_attention + cross_attention + 4 * L * d * ffn
