"""Converting baofff/U-ViT checkpoints (`libs/uvit.py::UViT`, MIT) into our `uvit-original` backbone.

Facts read from the public code (baofff/U-ViT: libs/uvit.py and configs/imagenet*_uvit*.py):
- UViT(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, qk_scale,
  mlp_time_embed, num_classes, use_checkpoint, conv, skip); defaults conv=True, skip=True,
  qkv_bias=False, mlp_time_embed=False, num_classes=-1 (unconditional).
- depth//2 in-blocks, a mid block, depth//2 out-blocks: depth + 1 blocks (our depth).
- num_classes counts the null class (1001 for ImageNet, null = 1000 = num_classes - 1).
- The ImageNet latent models predict noise under Stable Diffusion's scaled-linear betas and take the
  integer timestep raw: a converted model takes t = step / 1000 (time_scale 1000), prediction epsilon.
- Released checkpoints (`nnet_ema.pth`) are plain state dicts; `torch.load(weights_only=True)` reads them.
"""
from __future__ import annotations

import pathlib

import torch

from elit.errors import UserError
from elit._io import file_sha256
from elit.interop.io import read_config_file, read_weights, unwrap_checkpoint
from elit.model import ELITModel, ModelConfig

REFERENCE = {"repo": "baofff/U-ViT", "commit": "ce55170", "class": "libs.uvit.UViT"}
DEFAULTS = dict(img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                qkv_bias=False, qk_scale=None, mlp_time_embed=False, num_classes=-1, use_checkpoint=False,
                conv=True, skip=True)
_IMAGENET = dict(in_chans=4, mlp_ratio=4, qkv_bias=False, mlp_time_embed=False, num_classes=1001)
PRESETS = {  # name -> (constructor kwargs, config file they come from)
    "U-ViT-H/2": (dict(_IMAGENET, img_size=32, patch_size=2, embed_dim=1152, depth=28, num_heads=16, conv=False),
                  "configs/imagenet256_uvit_huge.py (ImageNet 256, nnet_ema.pth)"),
    "U-ViT-L/2": (dict(_IMAGENET, img_size=32, patch_size=2, embed_dim=1024, depth=20, num_heads=16),
                  "configs/imagenet256_uvit.py (ImageNet 256; conv left at its default, True)"),
    "U-ViT-H/4@512": (dict(_IMAGENET, img_size=64, patch_size=4, embed_dim=1152, depth=28, num_heads=16, conv=False),
                      "configs/imagenet512_uvit_huge.py (ImageNet 512)"),
    "U-ViT-L/4@512": (dict(_IMAGENET, img_size=64, patch_size=4, embed_dim=1024, depth=20, num_heads=16),
                      "configs/imagenet512_uvit_large.py (ImageNet 512; conv at its default, True)"),
}
_INTS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "num_classes")


def resolve_kwargs(config=None, preset: str | None = None) -> tuple[dict, dict]:
    """The UViT constructor kwargs (defaults filled in) and where they came from."""
    if (config is None) == (preset is None):
        raise UserError("give exactly one of a config (constructor kwargs) or a preset")
    if preset is not None:
        if preset not in PRESETS:
            from elit.interop.references import PRESETS as OTHERS
            if preset in OTHERS:   # a DiT / SiT / ELIT-SiT preset given with --from uvit
                raise UserError(f"preset {preset!r} is a {OTHERS[preset][0]} model; use --from {OTHERS[preset][0]}")
            raise UserError(f"unknown U-ViT preset {preset!r}; available: {', '.join(PRESETS)}")
        given, origin = PRESETS[preset]
        provenance = {"preset": preset, "preset_origin": origin}
    elif isinstance(config, (str, pathlib.Path)):
        given, provenance = read_config_file(config), {"config_file": str(config)}
    elif isinstance(config, dict):
        given, provenance = config.get("constructor_kwargs", config), {}
    else:
        raise UserError("config must be a path to a JSON file or a dict of UViT constructor kwargs")
    unknown = sorted(set(given) - set(DEFAULTS) - {"name"})
    if unknown:
        raise UserError(f"unknown UViT constructor option(s) {unknown}; known: {sorted(DEFAULTS)}")
    kw = {**DEFAULTS, **{k: v for k, v in given.items() if k != "name"}}
    for k in _INTS:
        if isinstance(kw[k], bool) or not isinstance(kw[k], int):
            raise UserError(f"UViT option {k} must be an integer, got {kw[k]!r}")
    if kw["qk_scale"] is not None:
        raise UserError(f"qk_scale={kw['qk_scale']} is not expressible: elit's attention uses 1/sqrt(head_dim)")
    provenance["constructor_kwargs"] = kw
    return kw, provenance


def model_config(kw: dict) -> dict:
    """Our config's fields (keyword names) for UViT kwargs (a plain `uvit-original` backbone)."""
    if kw["img_size"] % kw["patch_size"]:
        raise UserError(f"img_size {kw['img_size']} is not a multiple of patch_size {kw['patch_size']}")
    if kw["depth"] % 2:
        raise UserError(f"UViT depth must be even (depth//2 in-blocks + mid + as many out-blocks), got {kw['depth']}")
    return dict(backbone="uvit-original", elit=False, input_size=kw["img_size"], in_channels=kw["in_chans"],
                patch_size=kw["patch_size"], hidden_size=kw["embed_dim"], depth=kw["depth"] + 1,
                num_heads=kw["num_heads"], mlp_ratio=float(kw["mlp_ratio"]),
                num_classes=max(0, kw["num_classes"] - 1), qkv_bias=bool(kw["qkv_bias"]),
                mlp_time_embed=bool(kw["mlp_time_embed"]), conv=bool(kw["conv"]), skip=bool(kw["skip"]),
                time_scale=1000.0, prediction="epsilon")


def our_key(key: str, half: int) -> str:
    """baofff's state-dict key -> ours (`half` = depth // 2 in-blocks)."""
    parts = key.split(".")
    if parts[0] == "in_blocks":
        return "backbone.blocks." + ".".join(parts[1:])
    if parts[0] == "mid_block":
        return f"backbone.blocks.{half}." + ".".join(parts[1:])
    if parts[0] == "out_blocks":
        index = half + 1 + int(parts[1])
        if parts[2] == "skip_linear":
            return f"backbone.skip_linears.{index}." + ".".join(parts[3:])
        return f"backbone.blocks.{index}." + ".".join(parts[2:])
    if parts[0] == "patch_embed":   # PatchEmbed.proj -> our Conv2d itself
        return "backbone.patch_embed." + ".".join(parts[2:])
    return "backbone." + key


def convert(weights, config=None, preset: str | None = None) -> ELITModel:
    """A baofff/U-ViT checkpoint -> our plain `uvit-original` model (eval mode), checked key by key."""
    kw, provenance = resolve_kwargs(config, preset)
    cfg = ModelConfig.from_fields(**model_config(kw))
    if isinstance(weights, (str, pathlib.Path)):
        state, info = read_weights(weights)
        info["sha256"] = file_sha256(weights)
    else:
        state, info = unwrap_checkpoint(weights)
    half = kw["depth"] // 2
    try:
        mapped = {our_key(k, half): v for k, v in state.items()}
    except (IndexError, ValueError):
        raise UserError("the checkpoint's keys do not follow U-ViT's layout (in_blocks.N / mid_block / "
                        "out_blocks.N); is it a U-ViT state dict?") from None
    with torch.device("meta"):
        model = ELITModel(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {our_key(k, half): k for k in state}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(theirs[k] for k in set(mapped) - set(expected))
    wrong = sorted(f"{theirs[k]} {list(mapped[k].shape)} vs config {list(s)}" for k, s in expected.items()
                   if k in mapped and tuple(mapped[k].shape) != s)
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({', '.join(missing[:6])})" if missing else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:6])})" if unexpected else "",
                 f"{len(wrong)} wrong shapes ({'; '.join(wrong[:4])})" if wrong else ""]
        raise UserError("the checkpoint does not match UViT with this config: " + "; ".join(p for p in parts if p)
                        + " (check img_size, patch_size, embed_dim, depth, num_classes, conv, mlp_time_embed)")
    floats = {str(v.dtype) for v in mapped.values() if v.is_floating_point()}
    mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
    model.load_state_dict(mapped, assign=True)
    model.eval()
    notes = [f"{kw['depth'] + 1} blocks (baofff's depth={kw['depth']}: in + mid + out)"]
    if floats - {"torch.float32"}:
        notes.append(f"weights stored as {sorted(floats)}; converted to float32")
    model.conversion = {"source": "uvit", "reference": REFERENCE, **provenance, "weights": info, "notes": notes,
                        "prediction": "epsilon under Stable Diffusion's scaled-linear betas (1000 steps); "
                                      "feed t = step / 1000"}
    return model
