"""Checks a reference state dict against the layout its constructor builds, for `elit convert`.

Every mismatch is collected and reported at once (missing keys, unexpected keys, shapes), with a
guess at what the checkpoint really is; nothing is written before these checks pass.
"""
from __future__ import annotations

import torch

from elit.interop import references as ref
from elit.model.layers import sincos_pos_embed_2d
from elit.errors import UserError


def _fmt(keys, limit: int = 10) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _hint(source: str, state: dict) -> str:
    """A guess at what the checkpoint really is, to make a mismatch actionable."""
    has_elit = any(k.startswith(("input_token_editor.", "output_token_editor.")) for k in state)
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if not blocks or "x_embedder.proj.weight" not in state:
        return " It does not look like a SiT/DiT checkpoint at all (no x_embedder / blocks.N keys)."
    w = state["x_embedder.proj.weight"]
    hint = f" The checkpoint has {max(blocks) + 1} blocks of width {w.shape[0]}, patch {w.shape[-1]}."
    if has_elit and source != "authors-elit":
        hint += " It holds ELIT Read/Write weights (input_token_editor.*): use --from authors-elit."
    elif not has_elit and source == "authors-elit":
        hint += " It has no ELIT Read/Write weights: use --from authors-sit or --from dit."
    return hint


def _legacy_and_training_keys(source: str, kw: dict, state: dict, notes: list[str]) -> dict:
    if source == "dit":
        return state
    out = {}
    legacy = [k for k in state if k.startswith("decoder_blocks.")]
    for k, v in state.items():
        if k.startswith("projectors."):
            continue  # REPA alignment heads: training-only, never used by the forward
        if k.startswith("decoder_blocks."):  # older REPA layout (their utils.load_legacy_checkpoints)
            _, i, rest = k.split(".", 2)
            k = f"blocks.{int(i) + kw['encoder_depth']}.{rest}"
        out[k] = v
    dropped = len(state) - len(out)
    if dropped:
        notes.append(f"dropped {dropped} REPA projector tensors (projectors.*): training-only")
    if legacy:
        notes.append(f"renamed {len(legacy)} legacy decoder_blocks.* keys to blocks.(i + encoder_depth)")
    return out


def check_state(source: str, kw: dict, state: dict, notes: list[str]) -> dict:
    """Check a reference state dict against the layout its constructor builds; return it in our names."""
    state = _legacy_and_training_keys(source, kw, state, notes)
    expected = ref.expected_shapes(source, kw)
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    wrong = {k: (tuple(state[k].shape), expected[k]) for k in set(expected) & set(state)
             if tuple(state[k].shape) != expected[k]}
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_fmt(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): " + _fmt(
                f"{k} checkpoint {list(a)} vs config {list(b)}" for k, (a, b) in wrong.items()))
        raise UserError(f"the checkpoint does not match {ref.REFERENCE[source]['class']} with this config: "
                         + "; ".join(parts) + "." + _hint(source, state))
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    if floats - {torch.float32}:
        notes.append(f"weights stored as {sorted(map(str, floats))}; converted to float32")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    grid = kw["input_size"] // kw["patch_size"]
    ours = sincos_pos_embed_2d(kw["hidden_size"], grid, grid)
    diff = (state["pos_embed"][0] - ours).abs().max().item()
    tol = 1e-5 if floats <= {torch.float32, torch.float64} else 1e-2
    if not diff <= tol:  # also catches NaN
        raise UserError(f"the checkpoint's pos_embed differs from the fixed 2-D sin-cos table elit uses "
                         f"(max abs diff {diff:.3g} > {tol:g}): a learned or different position embedding "
                         f"cannot be expressed by the converted model")
    mapped = {ref.our_key(k): v for k, v in state.items() if k != "pos_embed"}
    table = mapped["backbone.y_embedder.embedding_table.weight"]
    if kw["class_dropout_prob"] <= 0:  # no null row in the reference: add an (untrained) zero row
        mapped["backbone.y_embedder.embedding_table.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
    return mapped


# Training args (from the checkpoint's "args") that change the forward but not any weight shape.
def check_args(source: str, kw: dict, args: dict, notes: list[str]) -> None:
    bad = []

    def check(key, ok, ours):
        if key in args and not ok(args[key]):
            bad.append(f"{key}={args[key]!r} vs the config's {ours}")

    check("num_classes", lambda v: v == kw["num_classes"], f"num_classes={kw['num_classes']}")
    for key in ("resolution", "image_size"):  # authors' train.py / DiT's train.py
        check(key, lambda v: v == 8 * kw["input_size"], f"input_size={kw['input_size']} (x 8)")
    if source != "dit":
        check("encoder_depth", lambda v: v == kw["encoder_depth"], f"encoder_depth={kw['encoder_depth']}")
    if source == "authors-elit":
        check("elit_group_size", lambda v: v == kw["group_size"], f"group_size={kw['group_size']}")

        def same_layout(name):  # their model name fixes depth and the tail (dit_decoder_depth)
            p = ref.PRESETS.get(name, (None, {}))[1]
            return not p or (p["depth"], p["dit_decoder_depth"]) == (kw["depth"], kw["dit_decoder_depth"])
        check("model", same_layout, f"depth={kw['depth']}, dit_decoder_depth={kw['dit_decoder_depth']}")
    if bad:
        raise UserError("the checkpoint's own training args disagree with the config (these do not all show "
                         "in the weight shapes, so the conversion would silently be wrong): " + "; ".join(bad))
    if source != "dit" and args.get("path_type", "linear") != "linear":
        notes.append(f"trained with path_type={args['path_type']!r}: its velocity is not the linear "
                     f"rectified-flow velocity elit's samplers assume")
    notes.append("checked the config against the checkpoint's training args")
