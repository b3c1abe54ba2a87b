"""`elit convert`: a reference checkpoint (the authors' ELIT-SiT or SiT, facebookresearch DiT,
baofff U-ViT) -> an elit model folder, checked key by key and shape by shape before anything is
written. See docs/interop.md for where the published checkpoints are and which preset fits each.

    elit convert --from authors-elit --weights ckpt.pt --preset ELIT-SiT-XL/2-multibudget --out DIR
    elit convert --from dit --weights DiT-XL-2-256x256.pt --preset DiT-XL/2 --out DIR
"""
from __future__ import annotations

import pathlib

from elit.cli._args import integer
from elit.errors import UserError

SOURCES = ("authors-elit", "authors-sit", "dit", "uvit")
HELP = "convert reference checkpoints (authors' ELIT-SiT, SiT, DiT, U-ViT)"


def add_arguments(parser) -> None:
    parser.add_argument("--from", dest="source", choices=SOURCES,
                        help="authors-elit (snap-research/elit SiTELIT), authors-sit (their SiT), "
                             "dit (facebookresearch/DiT), uvit (baofff/U-ViT)")
    parser.add_argument("--weights", help="reference state dict or training checkpoint (.pt, .safetensors); "
                                          "training checkpoints use their 'ema' entry")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", help="JSON file whose 'constructor_kwargs' holds the reference kwargs")
    group.add_argument("--preset", help="a published reference configuration, e.g. ELIT-SiT-XL/2, "
                                        "ELIT-SiT-XL/2-multibudget@512, SiT-XL/2, DiT-XL/2@512, U-ViT-H/2")
    parser.add_argument("--out", help="output folder (elit save_pretrained format)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the elit model already in --out (by default it is refused)")
    parser.add_argument("--min-budget", type=integer(1), default=None,
                        help="smallest budget the converted model accepts (default: the smallest trained one)")
    parser.add_argument("--list-presets", action="store_true", help="print the preset names and exit")


def check_out(out: pathlib.Path, overwrite: bool = False) -> None:
    """An existing --out is replaced whole (save_pretrained swaps folders): only an elit model folder,
    and only with --overwrite, as `elit sample` treats its folders."""
    from elit.hub import read_config
    try:
        _, meta = read_config(out)
    except UserError:
        raise UserError(f"refusing to replace {out}: it exists and is not an elit model folder; choose a new "
                        f"--out") from None
    if not overwrite:
        origin = meta.get("converted_from", {}).get("source") if isinstance(meta.get("converted_from"), dict) else None
        what = f"a model converted from {origin}" if origin else ("a trained model" if "training" in meta
                                                                   else "an elit model")
        raise UserError(f"--out {out} already holds {what}; pass --overwrite to replace it, or choose a new --out")


def run(args) -> int:
    from elit.interop import references as ref
    from elit.interop.convert import convert_checkpoint
    if args.list_presets:
        from elit.interop import uvit
        for name, (source, _, origin) in ref.PRESETS.items():
            print(f"{name:32s} --from {source:13s} {origin}")
        for name, (_, origin) in uvit.PRESETS.items():
            print(f"{name:32s} --from {'uvit':13s} {origin}")
        return 0
    for flag, value in (("--from", args.source), ("--weights", args.weights), ("--out", args.out)):
        if not value:
            raise UserError(f"{flag} is required")
    if (args.config is None) == (args.preset is None):
        raise UserError("give one of --config FILE or --preset NAME")
    from elit._output import guarded_output
    with guarded_output(args.out, "elit convert", kind="folder", ours=check_out, overwrite=args.overwrite) as out:
        model = convert_checkpoint(args.source, args.weights, config=args.config, preset=args.preset,
                                   min_budget=args.min_budget)
        from elit.hub import save_pretrained
        save_pretrained(model, out, extra={"converted_from": model.conversion})
    head, core, tail = model.layout()
    print(f"converted {args.weights} ({args.source}) -> {out}")
    print(f"  layout head/core/tail = {len(head)}/{len(core)}/{len(tail)}; budgets: {model.budgets or 'none'}")
    for note in model.conversion["notes"]:
        print(f"  note: {note}")
    return 0
