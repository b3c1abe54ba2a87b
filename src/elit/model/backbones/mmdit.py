"""What the MM-DiT adapters (diffusers' Qwen-Image and SD3 transformers) share.

An MM-DiT block updates two streams: image tokens and text tokens, joined in one attention. ELIT
applies to the image stream only (ELIT-SPEC 2.6): the head blocks run on [text ; image tokens],
the Read turns each window of image tokens into latents, the core blocks run on [the full-length
text ; the kept latents] with the original text mask, the Write returns the latents to the image
tokens, and the tail finishes. The text stream is the adapter's side stream: it passes every block,
the core included, so an untrained Write does not make the model "head + tail" (the text the tail
sees went through the core), which is why `elit finetune` distils from the original model.

The adapter holds the diffusers model and calls its own submodules (input projections, time/text
embedding, the blocks, the output norm and projection); it never copies a forward. It takes the
diffusers model as given (weights shared, never re-initialised) or builds one from its arguments
(`elit.load_pretrained`), importing diffusers only then: the model side stays importable without it.

Two entry points embed an input: `embed(x, t, y)`, elit's own signature (x (B, C, H, W) latents,
t in [0, 1], y a TextCondition), and `embed_call(**kwargs)`, the diffusers model's forward
arguments (used by elit.interop.diffusers.ElasticTransformer, which pipelines call).
"""
from __future__ import annotations

import importlib
import math

import torch

from elit.errors import UserError
from elit.model.backbones.base import Backbone
from elit.model.condition import TextCondition


def import_diffusers():
    try:
        return importlib.import_module("diffusers")
    except ImportError:
        raise UserError("this model wraps a diffusers transformer; install diffusers (pip install "
                        "'elit-diffusion[diffusers]')") from None


class MMDiTBackbone(Backbone):
    wraps_pretrained = True
    condition_kind = "text"
    # What elit.interop.diffusers needs to stand in for the diffusers model in its pipelines:
    diffusers_class = ""          # the diffusers class this adapter wraps
    attention_kwargs_name = ""    # the forward argument that carries the pipeline's attention kwargs
    # The input geometry a diffusers config does not hold: from_transformer's keywords (make_elastic's)
    geometry = ("input_size", "text_tokens")

    @classmethod
    def batched_cfg(cls, kwargs: dict) -> bool:
        """Does this diffusers call hold [uncond ; cond] in one batch (the pipeline's CFG)? Then a
        cheap-CFG budget runs the halves at different budgets. Pipelines that call the passes apart
        (inside cache_context) return False."""
        return False

    def __init__(self, args, transformer=None):
        super().__init__(args)
        if transformer is None:
            transformer = self.build_transformer(args)
        elif type(transformer).__name__ != self.diffusers_class:
            raise UserError(f"{type(self).__name__} wraps a diffusers {self.diffusers_class}, got "
                            f"{type(transformer).__name__}")
        else:
            expected = type(args).from_transformer(transformer, **{k: getattr(args, k) for k in self.geometry})
            if expected != args:
                raise UserError(f"the {self.diffusers_class} does not match the backbone arguments "
                                f"({expected} vs {args}); build the arguments with from_transformer")
        self.transformer = transformer

    @property
    def blocks(self):
        return self.transformer.transformer_blocks

    @classmethod
    def build_transformer(cls, args):
        """A fresh diffusers model built from `args` (its weights are loaded afterwards)."""
        model_cls = getattr(import_diffusers(), cls.diffusers_class)
        return model_cls(**args.diffusers_config())

    @classmethod
    def token_positions(cls, args) -> bool:
        return True

    def initialize_weights(self) -> None:
        """Nothing: diffusers initialises its modules when it builds them, and a wrapped model keeps
        its (pretrained) weights; ELITModel initialises only the latent interface."""

    # ------------------------------------------------------------------ the condition
    @property
    def null_class_id(self):
        return None

    def check_condition(self, y, batch: int, device):
        if not isinstance(y, TextCondition):
            raise UserError(f"a text-to-image model takes y = elit.model.TextCondition(embeds, mask, pooled) "
                            f"(the text encoder's output), got {type(y).__name__}")
        if len(y) != batch:
            raise UserError(f"the text condition holds {len(y)} prompts for a batch of {batch}")
        dim = self.args.joint_attention_dim
        if y.embeds.shape[-1] != dim:
            raise UserError(f"text embeddings must have {dim} features (the transformer's joint_attention_dim), "
                            f"got {y.embeds.shape[-1]}")
        return y.to(device)

    def example_condition(self, batch: int, device=None):
        return TextCondition(torch.zeros(batch, self.args.text_tokens, self.args.joint_attention_dim, device=device))

    def null_condition(self, y):
        """The dropped caption (TextCondition.null); see elit.model.condition for real negatives."""
        return y.null()

    def time_embedding(self, t):
        return self.transformer.time_text_embed.timestep_embedder(
            self.transformer.time_text_embed.time_proj(t * self.args.time_scale))

    def shard_units(self):
        return list(self.blocks)

    # ------------------------------------------------------------------ helpers for the subclasses
    @staticmethod
    def attention_kwargs(kwargs: dict | None, refuse=()) -> dict | None:
        """A copy of the caller's attention kwargs (never mutated), refusing keys we cannot honour."""
        if kwargs is None:
            return None
        bad = sorted(set(kwargs) & set(refuse))
        if bad:
            raise UserError(f"attention kwargs {bad} are not supported by the elastic model")
        return dict(kwargs)


class PooledTextBackbone(MMDiTBackbone):
    """What SD3 and FLUX share about their condition: a pooled text vector joins the time embedding,
    and there is no text mask (every token is attended to), so the dropped caption is zeros."""
    family = ""       # the model's name in messages

    def check_condition(self, y, batch: int, device):
        y = super().check_condition(y, batch, device)
        dim = self.args.pooled_projection_dim
        if y.pooled is None or y.pooled.shape[-1] != dim:
            raise UserError(f"{self.family} needs the pooled text embedding (pooled_projections, {dim} features) "
                            f"in TextCondition.pooled")
        if y.mask is not None and not bool(y.mask.all()):
            raise UserError(f"{self.family} attends to every text token (it has no text mask); pass mask=None")
        return y

    def example_condition(self, batch: int, device=None):
        a = self.args
        return TextCondition(torch.zeros(batch, a.text_tokens, a.joint_attention_dim, device=device),
                             pooled=torch.zeros(batch, a.pooled_projection_dim, device=device))

    def null_condition(self, y):
        """Zero text and pooled embeddings: no mask to drop the caption with."""
        return TextCondition(torch.zeros_like(y.embeds), None, torch.zeros_like(y.pooled))


def check_rope_axes(args) -> None:
    """A rotary table over axes must cover the head dim exactly (Qwen-Image's MSRoPE, FLUX's ids)."""
    if sum(args.axes_dims_rope) != args.hidden_size // args.num_heads:
        raise UserError(f"axes_dims_rope {args.axes_dims_rope} must sum to the head dim {args.hidden_size // args.num_heads}")


def check_grid_size(grid, tokens: int, what: str) -> None:
    if math.prod(grid) != tokens:
        raise UserError(f"{what}: a {grid[0]}x{grid[1]} token grid has {math.prod(grid)} tokens but the "
                        f"image stream has {tokens}")
