"""`elit finetune --teacher PATH --config NAME_OR_FILE --out DIR [section.key=value ...]`.

Turns a pretrained model into ELIT: the student is the teacher plus a fresh latent interface,
trained with the rectified-flow loss + finetune.distill_weight x ||v_student(budget) - v_teacher||^2
(elit.train.finetune). PATH is a local diffusers QwenImageTransformer2DModel / SD3Transformer2DModel /
FluxTransformer2DModel / WanTransformer3DModel folder (text-to-image or -video, data: text-latents) or an
elit model folder (e.g. from `elit convert` of a DiT
or U-ViT checkpoint). Rerunning with the same --out resumes; torchrun gives DDP (or FSDP2 with
system.parallel=fsdp), as for `elit train`. The EMA student is exported to DIR/model.
"""
from __future__ import annotations

import argparse
import sys

HELP = ("fine-tune a pretrained model (diffusers Qwen-Image / SD3 / FLUX / Wan, converted DiT / U-ViT) into ELIT "
        "by distillation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from elit.train.finetune import list_finetune_presets
    parser.add_argument("--teacher", default=None, help="local diffusers transformer folder or elit model folder "
                        "(or finetune.teacher in the config)")
    parser.add_argument("--config", required=True, help=f"YAML file or built-in preset ({', '.join(list_finetune_presets())})")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, finetune.json, model/")
    from elit.cli.train import add_shorthand_flags
    add_shorthand_flags(parser)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config keys, e.g. finetune.distill_weight=10 train.lr=1e-5 model.head_depth=2")


def run(args: argparse.Namespace) -> int:
    from elit.train.finetune import load_finetune_config
    from elit.train.config import check_flags, flag_overrides
    check_flags(args.overrides, {"--teacher": ("finetune.teacher", args.teacher)})   # a path: not parsed as YAML
    from elit.cli.train import shorthand_overrides
    overrides = flag_overrides(args.overrides, shorthand_overrides(args),
                               announce=lambda text: print(f"elit finetune: {text}", file=sys.stderr))
    cfg, ft = load_finetune_config(args.config, overrides, teacher=args.teacher)
    if args.print_config:
        import dataclasses

        import yaml
        from elit.train.config import dump_config
        print(dump_config(cfg) + yaml.safe_dump({"finetune": dataclasses.asdict(ft)}, sort_keys=False), end="")
        return 0
    from elit.train.finetune import finetune
    result = finetune(cfg, ft, args.out)
    if result.get("stopped"):   # SIGTERM / SIGINT: checkpointed, unfinished
        from elit.train.stop import exit_status
        return exit_status(result["stopped"])
    if result.get("is_main", True):
        print(f"elit finetune: {result['step']} steps done; EMA student in {result['model']}"
              + (f"; samples in {result['grid']}" if result.get("grid") else ""))
    return 0
