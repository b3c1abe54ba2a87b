"""Facts about the reference implementations that `elit convert` reads checkpoints from.

Read from the public code (facts only, nothing copied):
- snap-research/elit @ 4c7184a: `models/sit.py` (SiT), `models/sit_elit.py` (SiTELIT),
  `elit_utils/token_editors.py` (Read/Write layers), `elit_utils/masking_strategies.py` (budgets),
  `train.py` / `generate.py` (argparse defaults, how the constructors are called).
- facebookresearch/DiT @ ed81ce2: `models.py` (DiT), `train.py`, `download.py`.

This file states each reference's constructor defaults, its named presets, and the state-dict
layout its constructor builds (key -> shape), derived from the constructor kwargs by the same
rules the reference code follows. `elit.convert` checks checkpoints against that layout.
"""
from __future__ import annotations

SOURCES = ("authors-elit", "authors-sit", "dit")

# Constructor signatures and defaults. `qk_norm` has no default: the reference SiT block reads
# block_kwargs["qk_norm"] and fails without it (train.py/generate.py always pass it).
SIT_DEFAULTS = dict(
    path_type="edm", input_size=32, patch_size=2, in_channels=4, hidden_size=1152,
    decoder_hidden_size=768, encoder_depth=8, depth=28, num_heads=16, mlp_ratio=4.0,
    class_dropout_prob=0.1, num_classes=1000, use_cfg=False, enable_repa=False, z_dims=None,
    projector_dim=2048, fused_attn=True)
ELIT_EXTRA_DEFAULTS = dict(
    dit_encoder_depth=0, dit_decoder_depth=0, enable_elit=True, group_size=8,
    elit_max_mask_prob=0.5, elit_min_mask_prob=None, elit_read_depth=1, elit_write_depth=1)
ELIT_DEFAULTS = dict(SIT_DEFAULTS, **ELIT_EXTRA_DEFAULTS)
DIT_DEFAULTS = dict(
    input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
    mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True)
DEFAULTS = {"authors-elit": ELIT_DEFAULTS, "authors-sit": SIT_DEFAULTS, "dit": DIT_DEFAULTS}
REQUIRED = {"authors-elit": ("qk_norm",), "authors-sit": ("qk_norm",), "dit": ()}

REFERENCE = {
    "authors-elit": {"repo": "snap-research/elit", "commit": "4c7184ab608265d41b5ae1a7d4db27dcd8b6a613",
                     "class": "models.sit_elit.SiTELIT"},
    "authors-sit": {"repo": "snap-research/elit", "commit": "4c7184ab608265d41b5ae1a7d4db27dcd8b6a613",
                    "class": "models.sit.SiT"},
    "dit": {"repo": "facebookresearch/DiT", "commit": "ed81ce2229091fd4ecc9a223645f95cf379d582b",
            "class": "models.DiT"},
}

# Rows of the authors' learned latent position table: fixed at 64*64 (a 512px image at patch 2),
# independent of the input size (token_editors.py, LatentTokensGroupAdapter).
AUTHORS_LATENT_POS_ROWS = 64 * 64
TIME_FREQ_DIM = 256  # sinusoid width of every reference TimestepEmbedder

# ---------------------------------------------------------------------------- presets
# Size tables of the reference model dicts: name -> (depth, hidden, heads, dit_encoder/decoder depth).
_SIZES = {"S": (12, 384, 6, 2), "B": (12, 768, 12, 2), "L": (24, 1024, 16, 4), "XL": (28, 1152, 16, 4)}


def _presets() -> dict[str, tuple[str, dict, str]]:
    """name -> (source, constructor kwargs, where the values come from)."""
    out = {}
    for size, (depth, d, heads, enc_dec) in _SIZES.items():
        for p in (2, 4, 8):
            for res in (256, 512):
                at = "" if res == 256 else "@512"
                # train.py/generate.py: input_size = resolution // 8, 1000 classes, use_cfg, REPA off,
                # encoder_depth 8 and qk_norm False (argparse defaults).
                common = dict(input_size=res // 8, patch_size=p, hidden_size=d, depth=depth, num_heads=heads,
                              num_classes=1000, use_cfg=True, enable_repa=False, z_dims=None,
                              encoder_depth=8, fused_attn=True, qk_norm=False)
                sit = dict(common, decoder_hidden_size=d)
                out[f"SiT-{size}/{p}{at}"] = ("authors-sit", sit, "models/sit.py SiT_models + train.py defaults")
                # Group size: train.py default 4; the published 512px configs use 8 (16 groups).
                elit = dict(sit, dit_encoder_depth=enc_dec, dit_decoder_depth=enc_dec, enable_elit=True,
                            group_size=4 if res == 256 else 8, elit_read_depth=1, elit_write_depth=1)
                out[f"ELIT-SiT-{size}/{p}{at}"] = (
                    "authors-elit", dict(elit, elit_max_mask_prob=0.0, elit_min_mask_prob=None),
                    "models/sit_elit.py SiT_models + train.py defaults (single budget, mask 0.0); "
                    "experiments/train/elit_sit_xl_{256,512}.yaml")
                out[f"ELIT-SiT-{size}/{p}-multibudget{at}"] = (
                    "authors-elit", dict(elit, elit_max_mask_prob=0.9375, elit_min_mask_prob=0.0),
                    "experiments/train/elit_sit_xl_{256,512}_multibudget.yaml (mask 0.9375..0.0)")
                out[f"DiT-{size}/{p}{at}"] = (
                    "dit", dict(input_size=res // 8, patch_size=p, hidden_size=d, depth=depth, num_heads=heads,
                                num_classes=1000, learn_sigma=True, class_dropout_prob=0.1),
                    "facebookresearch/DiT models.py DiT_models + train.py/sample.py defaults")
    return out


PRESETS = _presets()


# ---------------------------------------------------------------------------- state-dict layout
def _linear(prefix: str, n_out: int, n_in: int, bias: bool = True) -> dict:
    shapes = {f"{prefix}.weight": (n_out, n_in)}
    if bias:
        shapes[f"{prefix}.bias"] = (n_out,)
    return shapes


def _cross_attention(prefix: str, d: int) -> dict:
    # token_editors.CrossAttention: q_proj, kv_proj (k then v), RMSNorm over the full width, proj.
    return {**_linear(f"{prefix}.q_proj", d, d), **_linear(f"{prefix}.kv_proj", 2 * d, d),
            f"{prefix}.q_norm.scale": (d,), f"{prefix}.k_norm.scale": (d,), **_linear(f"{prefix}.proj", d, d)}


def expected_shapes(source: str, kw: dict) -> dict[str, tuple[int, ...]]:
    """Every key (and its shape) of the reference model's state_dict for constructor kwargs `kw`."""
    d, p, c = kw["hidden_size"], kw["patch_size"], kw["in_channels"]
    n = (kw["input_size"] // p) ** 2
    hidden_mlp = int(d * kw["mlp_ratio"])
    rows = kw["num_classes"] + (1 if kw["class_dropout_prob"] > 0 else 0)
    out_channels = c * (2 if source == "dit" and kw["learn_sigma"] else 1)
    final_in = kw.get("decoder_hidden_size", d)
    s = {"pos_embed": (1, n, d), "x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,),
         **_linear("t_embedder.mlp.0", d, TIME_FREQ_DIM), **_linear("t_embedder.mlp.2", d, d),
         "y_embedder.embedding_table.weight": (rows, d)}
    for i in range(kw["depth"]):
        b = f"blocks.{i}"
        s.update({**_linear(f"{b}.attn.qkv", 3 * d, d), **_linear(f"{b}.attn.proj", d, d),
                  **_linear(f"{b}.mlp.fc1", hidden_mlp, d), **_linear(f"{b}.mlp.fc2", d, hidden_mlp),
                  **_linear(f"{b}.adaLN_modulation.1", 6 * d, d)})
        if source != "dit" and kw.get("qk_norm"):  # timm per-head LayerNorm (not expressible; see convert)
            hd = d // kw["num_heads"]
            s.update({f"{b}.attn.q_norm.weight": (hd,), f"{b}.attn.q_norm.bias": (hd,),
                      f"{b}.attn.k_norm.weight": (hd,), f"{b}.attn.k_norm.bias": (hd,)})
    s.update({**_linear("final_layer.linear", p * p * out_channels, final_in),
              **_linear("final_layer.adaLN_modulation.1", 2 * d, d)})
    if source == "authors-elit" and kw["enable_elit"]:
        s.update(_elit_shapes(kw))
    return s


def _elit_shapes(kw: dict) -> dict:
    d, j = kw["hidden_size"], kw["group_size"] ** 2  # one latent per window token (asserted upstream)
    r, w = "input_token_editor.adapters.0", "output_token_editor.adapters.0"
    s = {f"{r}.learned_query_embed": (j, d), f"{r}.pos_embed": (j, d),
         f"{r}.latent_pos_embed": (AUTHORS_LATENT_POS_ROWS, d),
         **_cross_attention(f"{r}.fit_layer.latents_attend_to_patches.0", d),
         f"{r}.fit_layer.read_ff.0.fc1.weight": (d, d), f"{r}.fit_layer.read_ff.0.fc2.weight": (d, d),
         **_linear(f"{r}.fit_layer.adaLN_modulation.1", 7 * d, d), f"{w}.pos_embed": (j, d)}
    for i in range(kw["elit_write_depth"]):
        s.update(_cross_attention(f"{w}.patches_attend_to_latents.{i}", d))
        s.update({f"{w}.write_ff.{i}.fc1.weight": (d, d), f"{w}.write_ff.{i}.fc2.weight": (d, d)})
    return s


# Reference key prefix -> our key prefix (everything else is `backbone.` + the same name).
ELIT_KEY_MAP = (
    ("input_token_editor.adapters.0.fit_layer.latents_attend_to_patches.0.", "interface.read.attn."),
    ("input_token_editor.adapters.0.fit_layer.read_ff.0.", "interface.read.mlp."),
    ("input_token_editor.adapters.0.fit_layer.adaLN_modulation.", "interface.read.adaLN_modulation."),
    ("input_token_editor.adapters.0.learned_query_embed", "interface.latent_queries"),
    ("input_token_editor.adapters.0.latent_pos_embed", "interface.latent_pos_embed"),
    ("input_token_editor.adapters.0.pos_embed", "interface.read_pos"),
    ("output_token_editor.adapters.0.patches_attend_to_latents.0.", "interface.write.attn."),
    ("output_token_editor.adapters.0.write_ff.0.", "interface.write.mlp."),
    ("output_token_editor.adapters.0.pos_embed", "interface.write_pos"),
)


def our_key(ref_key: str) -> str:
    for old, new in ELIT_KEY_MAP:
        if ref_key.startswith(old):
            return new + ref_key[len(old):]
    return "backbone." + ref_key
