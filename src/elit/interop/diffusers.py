"""Elastic diffusers MM-DiTs: `elit.make_elastic(transformer, ...)` and the module pipelines call.

    transformer = QwenImageTransformer2DModel.from_pretrained("/models/Qwen-Image/transformer")
    elastic = elit.make_elastic(transformer, head_depth=8, tail_depth=8, window=(16, 16))
    out = elastic(hidden_states=..., encoder_hidden_states=..., ..., budget=64)   # what the transformer returns
    pipe.transformer = elastic                                                      # stock pipelines
    pipe(prompt_embeds=..., attention_kwargs={"elit_budget": 0.5, "elit_uncond_budget": 0.125})

`ElasticTransformer` has the wrapped transformer's forward signature plus `budget=`, and the
attributes pipelines touch (`config`, `device`, `dtype`, `cache_context`), so it replaces
`pipe.transformer` in QwenImagePipeline, StableDiffusion3Pipeline, FluxPipeline and WanPipeline. It shares the transformer's
weights (never copies or re-initialises them); only the latent interface is new.

Budgets per pass, so cheap CFG runs through a stock pipeline:
- `budget=` on a call wins; otherwise the attention kwargs the pipeline forwards (Qwen:
  `attention_kwargs`, SD3: `joint_attention_kwargs`) may hold `elit_budget` (the conditional pass)
  and `elit_uncond_budget` (the unconditional pass); the caller's dict is never mutated.
- QwenImagePipeline (and FluxPipeline, WanPipeline) call cond and uncond separately inside
  `transformer.cache_context("cond" / "uncond")`: the uncond call runs at `elit_uncond_budget`.
- StableDiffusion3Pipeline batches [uncond ; cond] in one call: with `elit_uncond_budget` set, the
  batch is split in halves, the first half run at the uncond budget and the second at the cond
  budget (a skip-layer-guidance call, which passes `skip_layers`, is a cond-only call).
Unset budgets are the full budget. With `elit=False` the wrapper runs the plain transformer through
the same adapter: it then equals the transformer's own forward exactly.
"""
from __future__ import annotations

import contextlib
import importlib

import torch
import torch.nn as nn

from elit.errors import UserError
from elit.model import ELITModel, ModelConfig
from elit.model.backbones import BACKBONES
from elit.model.positions import resolve_latent_pos

BUDGET_KEYS = ("elit_budget", "elit_uncond_budget")


def adapter_for(transformer_class: str):
    """The registered adapter (elit.model.backbones.BACKBONES) that wraps this diffusers class."""
    for adapter in BACKBONES.values():
        if getattr(adapter, "diffusers_class", "") == transformer_class:
            return adapter
    wrapped = sorted(a.diffusers_class for a in BACKBONES.values() if getattr(a, "diffusers_class", ""))
    raise UserError(f"make_elastic supports diffusers' {' and '.join(wrapped)} (diffusers >= 0.37); "
                    f"got {transformer_class}")


def elastic_config(transformer, head_depth=None, tail_depth=None, window=None, elit: bool = True,
                   input_size: int | None = None, text_tokens: int | None = None, *, frames: int | None = None,
                   width: int | None = None, **interface) -> ModelConfig:
    """The ModelConfig of an elastic `transformer`: its own geometry plus the interface.

    head_depth / tail_depth default to the paper's Qwen-Image placement scaled to the depth
    (8 of 60 blocks each side, at least 1); window defaults to 16 windows at `input_size`
    (latent size; default: 128 for Qwen-Image, the sample size for SD3; Wan: the latent height,
    with `width` and `frames`, default 480p x 81 frames). `interface` holds other InterfaceConfig
    fields (min_budget, latents_per_group, latent_pos, ...); latent_pos defaults to "tokens" (each
    latent on a token of its window, docs/text-to-image.md).
    """
    adapter = adapter_for(type(transformer).__name__)
    given = {k: v for k, v in (("input_size", input_size), ("text_tokens", text_tokens), ("frames", frames),
                               ("width", width)) if v is not None}
    extra = sorted(set(given) - set(adapter.geometry))
    if extra:
        raise UserError(f"{', '.join(extra)} do not apply to a {adapter.diffusers_class}; its geometry is "
                        f"{', '.join(adapter.geometry)}")
    args_cls = adapter.args_class
    args = args_cls.from_transformer(transformer, **given)
    config = {"backbone": args.to_dict(), "interface": None, "split": None}
    if elit:
        side = max(1, round(args.depth * 8 / 60))
        config["split"] = {"head": side if head_depth is None else head_depth,
                           "tail": side if tail_depth is None else tail_depth}
        config["interface"] = {"window": None if window is None else list(window), **interface}
        config["interface"]["latent_pos"] = resolve_latent_pos(
            interface.get("latent_pos"), uses_rope=args.uses_rope, pretrained=True,
            token_positions=adapter.token_positions(args))
    elif head_depth is not None or tail_depth is not None or window is not None or interface:
        raise UserError("elit=False builds the plain transformer: give no head/tail depth, window or interface option")
    return ModelConfig.from_dict(config)


def make_elastic(transformer, head_depth=None, tail_depth=None, window=None, *, elit: bool = True,
                 input_size: int | None = None, text_tokens: int | None = None, frames: int | None = None,
                 width: int | None = None, **interface) -> "ElasticTransformer":
    """Wrap a diffusers QwenImageTransformer2DModel / SD3Transformer2DModel / FluxTransformer2DModel /
    WanTransformer3DModel (or an elit model folder's ELITModel with such a backbone) into an
    ElasticTransformer; see the module docstring. The transformer's weights are shared; only the new
    latent interface is initialised. Wan's window is (t, h, w) tokens; `frames` / `width` (latent
    frames and width) join `input_size` (its latent height) as the build geometry."""
    if isinstance(transformer, ELITModel):
        return ElasticTransformer(transformer)
    config = elastic_config(transformer, head_depth, tail_depth, window, elit, input_size, text_tokens,
                            frames=frames, width=width, **interface)
    adapter = config.adapter(config.backbone, transformer)
    model = ELITModel(config, backbone=adapter)
    weight = next(transformer.parameters())
    model.to(device=weight.device, dtype=weight.dtype)   # the new interface joins the transformer
    return ElasticTransformer(model)


class ElasticTransformer(nn.Module):
    """The transformer's forward signature plus `budget=`; see the module docstring."""

    def __init__(self, model: ELITModel):
        super().__init__()
        if not getattr(model.backbone, "diffusers_class", ""):
            raise UserError(f"ElasticTransformer wraps an ELIT model with a diffusers MM-DiT backbone, got backbone "
                            f"{type(model.config.backbone).name!r}")
        self.model = model
        self._kwargs_name = model.backbone.attention_kwargs_name
        self._pass = None             # "cond" / "uncond" inside the pipeline's cache_context

    # ------------------------------------------------------------------ what pipelines read
    @property
    def transformer(self):
        return self.model.backbone.transformer

    @property
    def config(self):
        """The wrapped transformer's diffusers config (pipelines read in_channels, patch_size, ...)."""
        return self.transformer.config

    @property
    def elit_config(self) -> ModelConfig:
        return self.model.config

    @property
    def budgets(self) -> list[int]:
        return self.model.budgets

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs):
        """Which pass the pipeline is running ("cond" / "uncond"); also forwarded to the transformer's
        own cache context (diffusers' cache hooks)."""
        previous, self._pass = self._pass, name
        own = getattr(self.transformer, "cache_context", None)
        try:
            with own(name, **kwargs) if own is not None else contextlib.nullcontext():
                yield
        finally:
            self._pass = previous

    # ------------------------------------------------------------------ forward
    def forward(self, *args, budget=None, return_dict: bool = True, **kwargs):
        """The transformer's own arguments (hidden_states, encoder_hidden_states, timestep, ...) plus
        `budget` (latents per window: int, fraction of J, or None = full). Returns what the
        transformer returns: Transformer2DModelOutput, or a 1-tuple with return_dict=False."""
        kwargs = _named(self.transformer, args, kwargs)
        attention = kwargs.get(self._kwargs_name)
        budgets = {k: attention[k] for k in BUDGET_KEYS if attention and k in attention}
        if attention is not None:          # a copy without our keys: the caller's dict stays as it was
            kwargs[self._kwargs_name] = {k: v for k, v in attention.items() if k not in BUDGET_KEYS}
        cond = self.model.resolve_budget(budget if budget is not None else budgets.get("elit_budget"))
        uncond = cond if budget is not None else self.model.resolve_budget(budgets.get("elit_uncond_budget", cond))
        if self._pass == "uncond":
            cond = uncond
        with lora_scale(self.transformer, kwargs.get(self._kwargs_name)) as attention:
            if self._kwargs_name in kwargs:
                kwargs[self._kwargs_name] = attention
            split = uncond != cond and self.model.backbone.batched_cfg(kwargs)
            out = self._split_cfg(kwargs, uncond, cond) if split else self._run(kwargs, cond)
        if not return_dict:
            return (out,)
        return importlib.import_module("diffusers.models.modeling_outputs").Transformer2DModelOutput(sample=out)

    def _run(self, kwargs, kept):
        return self.model.forward_embedded(self.model.backbone.embed_call(**kwargs), kept)

    def _split_cfg(self, kwargs, uncond, cond):
        """SD3's batched CFG call: first half unconditional, second half conditional."""
        B = kwargs["hidden_states"].shape[0]
        if B % 2:
            raise UserError(f"elit_uncond_budget is set but the SD3 call's batch ({B}) is not an [uncond ; cond] "
                            f"pair; drop elit_uncond_budget when not using classifier-free guidance")
        halves = []
        for part, budget in ((slice(0, B // 2), uncond), (slice(B // 2, B), cond)):
            sub = {k: v[part] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == B else v
                   for k, v in kwargs.items()}
            halves.append(self._run(sub, budget))
        return torch.cat(halves)

    def extra_repr(self) -> str:
        return type(self.transformer).__name__


def _named(transformer, args, kwargs) -> dict:
    """Positional arguments -> names, in the order of the transformer's forward."""
    if not args:
        return dict(kwargs)
    import inspect
    names = [p for p in inspect.signature(type(transformer).forward).parameters if p != "self"]
    if len(args) > len(names):
        raise UserError(f"too many positional arguments for {type(transformer).__name__}.forward")
    named = dict(zip(names, args))
    clash = sorted(set(named) & set(kwargs))
    if clash:
        raise UserError(f"argument(s) {clash} given twice")
    return {**named, **kwargs}


@contextlib.contextmanager
def lora_scale(transformer, kwargs: dict | None):
    """What diffusers' `apply_lora_scale` does around a forward: pop "scale" from (a copy of) the
    attention kwargs and scale the PEFT LoRA layers by it for the call. Yields the kwargs without it."""
    kwargs = None if kwargs is None else dict(kwargs)
    scale = 1.0 if kwargs is None else kwargs.pop("scale", 1.0)
    utils = importlib.import_module("diffusers.utils")
    peft = getattr(utils, "USE_PEFT_BACKEND", False)
    if peft:
        utils.scale_lora_layers(transformer, scale)
    try:
        yield kwargs
    finally:
        if peft:
            utils.unscale_lora_layers(transformer, scale)
