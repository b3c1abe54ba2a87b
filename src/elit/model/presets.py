"""Named model presets and `create_model`.

A preset is a flat config (see elit.model.config): `create_model("ELIT-DiT-B/2", num_classes=10,
in_channels=1)` builds it with any field overridden by keyword.
"""
from __future__ import annotations

from elit.model.config import ModelConfig
from elit.model.wrapper import ELITModel
from elit.errors import UserError

# name: (hidden, depth, heads, head_depth, tail_depth). About 67-71% of the blocks in the core, as
# the paper's rule; B's 2-8-2 is its ablation default, XL's 4-20-4 its main layout.
DIT_SIZES = {
    "S": (384, 12, 6, 2, 2),
    "B": (768, 12, 12, 2, 2),
    "L": (1024, 24, 16, 4, 4),
    "XL": (1152, 28, 16, 4, 4),
}


# U-ViT's sizes (Bao et al. 2023) counted in blocks (in + mid + out: baofff's depth + 1), and the
# paper's U-ViT-XL (28 blocks, as DiT-XL). ELIT splits keep ~70% of the blocks in the core with
# equal head and tail (so no long skip crosses the interface).
UVIT_SIZES = {  # name: (hidden, blocks, heads, head = tail depth)
    "S": (512, 13, 8, 2),
    "M": (768, 17, 12, 3),
    "L": (1024, 21, 16, 3),
    "H": (1152, 29, 16, 4),
    "XL": (1152, 28, 16, 4),
}


def _presets() -> dict[str, dict]:
    presets = {}
    for size, (d, depth, heads, hd, td) in DIT_SIZES.items():
        for p in (2, 4, 8):
            base = dict(backbone="dit", hidden_size=d, depth=depth, num_heads=heads, patch_size=p)
            presets[f"DiT-{size}/{p}"] = dict(base, elit=False)
            presets[f"ELIT-DiT-{size}/{p}"] = dict(base, elit=True, head_depth=hd, tail_depth=td)
    for size, (d, depth, heads, hd, td) in DIT_SIZES.items():   # HDiT: DiT sizes, hourglass at 2/7 and 5/7
        base = dict(backbone="hdit", hidden_size=d, depth=depth, num_heads=heads, patch_size=2)
        presets[f"HDiT-{size}/2"] = dict(base, elit=False)
        presets[f"ELIT-HDiT-{size}/2"] = dict(base, elit=True, head_depth=hd, tail_depth=td)
    for size, (d, depth, heads, hd, td) in DIT_SIZES.items():   # video: 1x2x2 patches, 8 frames, 2x4x4 windows
        base = dict(backbone="video-dit", hidden_size=d, depth=depth, num_heads=heads, patch_size=2)
        presets[f"VideoDiT-{size}/2"] = dict(base, elit=False)
        presets[f"ELIT-VideoDiT-{size}/2"] = dict(base, elit=True, head_depth=hd, tail_depth=td)
    for size, (d, depth, heads, ht) in UVIT_SIZES.items():
        split = dict(elit=True, head_depth=ht, tail_depth=ht)
        paper = dict(backbone="uvit", hidden_size=d, depth=depth, num_heads=heads, patch_size=2)
        presets[f"U-ViT-{size}/2"] = dict(paper, elit=False)
        presets[f"ELIT-U-ViT-{size}/2"] = dict(paper, **split)
        if depth % 2:   # the original form has a mid block: an odd number of blocks
            original = dict(backbone="uvit-original", hidden_size=d, depth=depth, num_heads=heads, patch_size=2)
            presets[f"U-ViT-original-{size}/2"] = dict(original, elit=False)
            presets[f"ELIT-U-ViT-original-{size}/2"] = dict(original, **split)   # latents: a learned table
    return presets


MODEL_PRESETS: dict[str, dict] = _presets()


def list_models() -> list[str]:
    return list(MODEL_PRESETS)


def suggest(name) -> str:
    """'did you mean ...' for a mistyped preset name, and where the full list is."""
    import difflib
    close = difflib.get_close_matches(str(name), list(MODEL_PRESETS), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"{hint}elit.list_models() lists all {len(MODEL_PRESETS)} presets (DiT, U-ViT, HDiT, VideoDiT, ...)"


def preset_config(name: str | None = None, **overrides) -> ModelConfig:
    """The config of a preset (see `list_models()`), with fields overridden by keyword name or by part
    (see elit.model.config.section_parts)."""
    from elit.model.config import build_config, section_parts
    if name is None:
        base = None
    elif name in MODEL_PRESETS:
        base = ModelConfig.from_flat(MODEL_PRESETS[name])   # the table above is written in keyword names
    else:
        raise UserError(f"unknown model {name!r}; {suggest(name)}")
    return build_config(section_parts(overrides), base=base)


def create_model(name: str | None = None, **overrides) -> ELITModel:
    """Build a preset (see `list_models()`), with any config field overridden by keyword."""
    return ELITModel(preset_config(name, **overrides))
