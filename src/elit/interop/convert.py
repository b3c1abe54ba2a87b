"""`elit convert`: load the authors' ELIT-SiT, their SiT baseline, or facebookresearch DiT.

A converted checkpoint is not a second architecture: it is our one ELITModel with a documented
compatibility configuration (see docs/interop.md):

    authors' ELIT-SiT: head = REPA `encoder_depth` (their forward's head, not `dit_encoder_depth`),
        tail = `dit_decoder_depth`, fixed sin-cos patch positions, t fed raw (time_scale=1),
        learned within-window positions added to the stream, 4096-row learned latent position
        table, 7-chunk Read adaLN, Write without norms that also sees the dropped latents.
    authors' SiT: the same backbone with elit=False.
    DiT: elit=False, time_scale=1000 (pass t = step / 1000), learned-sigma channels (2C outputs).

Everything is checked before anything is written: constructor options we cannot express, the
checkpoint's keys and shapes against the layout the reference constructor builds, the sin-cos
table, and the checkpoint's own training args where it has them.
"""
from __future__ import annotations

import math
import pathlib

from elit.errors import UserError
from elit.interop import references as ref
from elit.interop.checks import check_args, check_state
from elit._io import file_sha256
from elit.interop.io import read_config_file, read_weights, unwrap_checkpoint
from elit.model import ELITModel, ModelConfig

_INT_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes",
               "encoder_depth", "decoder_hidden_size", "dit_encoder_depth", "dit_decoder_depth", "group_size",
               "elit_read_depth", "elit_write_depth")
# SiTELIT's own options; the SiT baseline ignores them (its **block_kwargs swallows them).
_ELIT_ONLY = tuple(ref.ELIT_EXTRA_DEFAULTS)


# ----------------------------------------------------------------------------- config
def resolve_kwargs(source: str, config=None, preset: str | None = None) -> tuple[dict, list[str], dict]:
    """The reference constructor's full kwargs (defaults filled in), notes, and provenance."""
    if source not in ref.SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(ref.SOURCES)}")
    if (config is None) == (preset is None):
        raise UserError("give exactly one of a config (constructor kwargs) or a preset")
    notes: list[str] = []
    if preset is not None:
        if preset not in ref.PRESETS:
            from elit.interop import uvit
            if preset in uvit.PRESETS:   # names are unique across the sources: point to the right one
                raise UserError(f"preset {preset!r} is a U-ViT model; use --from uvit")
            near = [n for n in ref.PRESETS if n.split("/")[0] == preset.split("/")[0]] or list(ref.PRESETS)[:12]
            raise UserError(f"unknown preset {preset!r}; e.g. {', '.join(near[:12])} (`elit convert --list-presets`)")
        preset_source, given, origin = ref.PRESETS[preset]
        if preset_source != source:
            raise UserError(f"preset {preset!r} is a {preset_source} model; use --from {preset_source}")
        provenance = {"preset": preset, "preset_origin": origin}
    else:
        if isinstance(config, (str, pathlib.Path)):
            provenance = {"config_file": str(config)}
            given = read_config_file(config)
        elif isinstance(config, dict):
            provenance = {}
            given = config.get("constructor_kwargs", config)
        else:
            raise UserError("config must be a path to a JSON file or a dict of constructor kwargs")
    given = dict(given)
    if source == "authors-sit":
        # The reference SiT swallows extra kwargs (**block_kwargs), so an ELIT config works for the baseline.
        dropped = sorted(k for k in given if k in _ELIT_ONLY)
        if dropped:
            notes.append(f"ignored ELIT-only options for the SiT baseline: {dropped}")
            given = {k: v for k, v in given.items() if k not in _ELIT_ONLY}
    defaults = ref.DEFAULTS[source]
    unknown = sorted(set(given) - set(defaults) - {"qk_norm"})
    if unknown:
        hint = " (a facebookresearch DiT config: use --from dit)" if "learn_sigma" in unknown else ""
        raise UserError(f"unknown {ref.REFERENCE[source]['class']} constructor option(s) {unknown}{hint}; "
                         f"known: {sorted(set(defaults) | set(ref.REQUIRED[source]))}")
    missing = [k for k in ref.REQUIRED[source] if k not in given]
    if missing:
        raise UserError(f"constructor kwargs lack {missing}: the reference block requires them "
                         f"(its train.py passes qk_norm, default False)")
    kw = {**defaults, **given}
    for k in _INT_FIELDS:
        if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], int)):
            raise UserError(f"constructor option {k} must be an integer, got {kw[k]!r}")
    provenance["constructor_kwargs"] = kw
    return kw, notes, provenance


def _trained_budgets(kw: dict) -> list[int]:
    """Latents per group the reference trained with (masking_strategies.MultiOrderedTokenMaskingStrategy)."""
    J = kw["group_size"] ** 2
    hi = kw["elit_max_mask_prob"] if kw["elit_max_mask_prob"] is not None else 1 - 1 / J
    lo = kw["elit_min_mask_prob"] if kw["elit_min_mask_prob"] is not None else hi
    levels = [k / J for k in range(J) if lo - 1e-9 <= k / J <= hi + 1e-9]
    if not levels:
        raise UserError(f"elit_min_mask_prob={lo} and elit_max_mask_prob={hi} leave no valid mask level "
                         f"(multiples of 1/{J} in [min, max])")
    return sorted({int(J * (1 - p)) for p in levels})  # the reference's own float arithmetic and floor


def model_config(source: str, kw: dict, min_budget: int | None = None) -> tuple[dict, list[str]]:
    """Our ModelConfig fields for reference kwargs, refusing what the one model cannot express."""
    notes: list[str] = []
    d, p, depth = kw["hidden_size"], kw["patch_size"], kw["depth"]
    if min(d, p, depth, kw["num_heads"], kw["input_size"], kw["in_channels"]) < 1:
        raise UserError("hidden_size, patch_size, depth, num_heads, input_size and in_channels must be >= 1")
    if kw["input_size"] % p:
        raise UserError(f"input_size {kw['input_size']} is not a multiple of patch_size {p}")
    if d % kw["num_heads"] or d % 4:
        raise UserError(f"hidden_size {d} must be divisible by num_heads {kw['num_heads']} and by 4 (sin-cos table)")
    if kw["num_classes"] < 1:
        raise UserError("num_classes must be >= 1: unconditional reference models are not supported")
    grid = kw["input_size"] // p
    cfg = dict(backbone="dit", input_size=kw["input_size"], in_channels=kw["in_channels"], patch_size=p,
               hidden_size=d, depth=depth, num_heads=kw["num_heads"], mlp_ratio=float(kw["mlp_ratio"]),
               num_classes=kw["num_classes"],
               learn_sigma=bool(source == "dit" and kw["learn_sigma"]), qk_norm=False, rope=False,
               pos_embed="sincos", time_scale=1000.0 if source == "dit" else 1.0, elit=False,
               prediction="epsilon" if source == "dit" else "velocity")
    if kw["class_dropout_prob"] <= 0:
        notes.append("class_dropout_prob=0: the reference has no null-class row; a zero row was added, so the "
                     "null class (unconditional pass) is untrained")
    if source == "dit":
        return cfg, notes
    if kw["decoder_hidden_size"] != d:
        raise UserError(f"decoder_hidden_size={kw['decoder_hidden_size']} differs from hidden_size={d}: not "
                         f"expressible (the reference's final layer would not fit its blocks either)")
    if kw["qk_norm"]:
        raise UserError("qk_norm=True is not expressible: the reference uses timm's per-head LayerNorm "
                         "(with weight and bias) on q and k; elit's QK-norm is RMSNorm")
    if kw["enable_repa"]:
        notes.append("enable_repa=True: the REPA projectors are training-only and are dropped")
    if source == "authors-sit" or not kw["enable_elit"]:
        return cfg, notes
    for name in ("elit_read_depth", "elit_write_depth"):
        if kw[name] != 1:
            raise UserError(f"{name}={kw[name]} is not expressible: elit has exactly one Read and one Write layer")
    g, enc, dec = kw["group_size"], kw["encoder_depth"], kw["dit_decoder_depth"]
    if g < 1 or grid % g:
        raise UserError(f"group_size={g} does not divide the {grid}x{grid} token grid (input_size/patch_size)")
    if grid * grid > ref.AUTHORS_LATENT_POS_ROWS:
        raise UserError(f"a {grid}x{grid} token grid exceeds the reference's {ref.AUTHORS_LATENT_POS_ROWS}-row "
                         f"latent position table; the reference cannot run it")
    if enc < 0 or dec < 0 or enc + dec >= depth:
        raise UserError(f"encoder_depth={enc} (the head) + dit_decoder_depth={dec} (the tail) must leave at "
                         f"least one core block of depth={depth}")
    if kw["dit_encoder_depth"] != enc:
        notes.append(f"head length is encoder_depth={enc} (what the reference forward runs); "
                     f"dit_encoder_depth={kw['dit_encoder_depth']} is stored but unused by the reference")
    trained = _trained_budgets(kw)
    J = g * g
    cfg.update(elit=True, head_depth=enc, tail_depth=dec, window=[g, g], latents_per_group=J,
               min_budget=min_budget if min_budget is not None else trained[0], interface_qk_norm="full",
               interface_mlp_bias=False, read_adaln_chunks=7, write_norm=False, window_pos=True,
               window_pos_in_residual=True, latent_pos="learned",
               latent_pos_table_size=ref.AUTHORS_LATENT_POS_ROWS, write_sees_dropped=True)
    if not 1 <= cfg["min_budget"] <= J:
        raise UserError(f"min_budget must lie in 1..{J}, got {cfg['min_budget']}")
    notes.append(f"trained budgets (latents kept per group of {J}): {trained}; min_budget={cfg['min_budget']}")
    return cfg, notes


# ----------------------------------------------------------------------------- API
def convert_checkpoint(source: str, weights, config=None, preset: str | None = None,
                       min_budget: int | None = None) -> ELITModel:
    """Convert a reference checkpoint into an ELITModel (eval mode).

    source: "authors-elit", "authors-sit", "dit" or "uvit" (baofff/U-ViT, see elit.interop.uvit). weights: a `.pt`/`.safetensors` path, or an
    already loaded state dict / training checkpoint dict. config: a JSON path (with
    `constructor_kwargs`) or a dict of the reference constructor's kwargs; or preset: a name from
    `elit.convert_reference.PRESETS`. min_budget: override the smallest budget (default: the
    smallest the reference trained with). Provenance is in `model.conversion` (a JSON-able dict).
    """
    if source == "uvit":
        if min_budget is not None:
            raise UserError("--min-budget applies to ELIT checkpoints; a U-ViT checkpoint has no budgets")
        from elit.interop import uvit
        return uvit.convert(weights, config, preset)
    kw, notes, provenance = resolve_kwargs(source, config, preset)
    cfg, more = model_config(source, kw, min_budget)
    notes += more
    if isinstance(weights, (str, pathlib.Path)):
        state, info = read_weights(weights)
        info["sha256"] = file_sha256(weights)
    else:
        state, info = unwrap_checkpoint(weights)
    if "args" in info:
        check_args(source, kw, info["args"], notes)
    mapped = check_state(source, kw, state, notes)
    model = ELITModel(ModelConfig.from_fields(**cfg))
    model.load_state_dict(mapped, strict=True)  # the layout check above guarantees a full match
    model.eval()
    model.conversion = {
        "source": source, "reference": ref.REFERENCE[source], **provenance, "weights": info, "notes": notes,
        "prediction": ("epsilon and learned variance under DiT's discrete VP schedule (1000 steps); "
                       "feed t = step / 1000" if source == "dit" else
                       "velocity; t in [0, 1] fed raw (time_scale=1), as the reference"),
    }
    return model


def authors_budget_to_ours(inference_budget, model: ELITModel, grid: tuple[int, int] | None = None) -> int:
    """The authors' `inference_budget` -> our budget (latents kept per group), bit for bit.

    Their rule (masking_strategies.py): b <= 1 is a fraction, mask_prob = 1 - b; b > 1 is an
    absolute count over all N tokens, mask_prob = 1 - b / N; kept = int(J * (1 - mask_prob)),
    Python float arithmetic then floor (0.6 of 16 keeps 9). `grid` is the token grid of the input
    (default: the model's build size), needed only for absolute counts.
    """
    J = model.latents_per_group
    if J is None:
        raise UserError("this model has no latent interface (converted with elit off); it takes no budget")
    b = float(inference_budget)
    if not b > 0:
        raise UserError(f"inference_budget must be > 0, got {inference_budget}")
    n = math.prod(grid or model.config.grid)
    mask_prob = 1 - b if b <= 1 else 1 - b / n
    kept = int(J * (1 - mask_prob))
    if not 1 <= kept <= J:
        raise UserError(f"inference_budget {inference_budget} keeps {kept} of {J} latents per group; "
                         f"the reference needs 1..{J}")
    if kept not in model.budgets:
        raise UserError(f"inference_budget {inference_budget} keeps {kept} latents per group, below this "
                         f"model's min_budget {model.budgets[0]} (by default the smallest trained budget); reconvert "
                         f"with --min-budget {kept} to allow it")
    return kept
