"""`elit plan`: pick steps, budget (or schedule) and guidance that reach the best quality for a cost.

    elit plan --model DIR --target-gflops 3000 --table measured.json
    elit plan --model DIR --target-seconds 0.05            # builds a small proxy table itself
"""
from __future__ import annotations

import json
import pathlib

from elit._io import write_json
from elit._output import guarded_output
from elit.cli._args import integer, number, output_file, resolve_device
from elit.errors import UserError

HELP = "choose steps/budget/guidance for a target cost"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-gflops", type=number(above=0), help="GFLOPs per image for the whole sampling run")
    target.add_argument("--target-seconds", type=number(above=0), help="seconds per image, measured on this machine")
    parser.add_argument("--table", default=None, help="measured table (JSON list of rows); default: build a "
                                                      "proxy table by sampling the model")
    parser.add_argument("--table-model", default=None, help="study table (several models, one column per metric, "
                        "e.g. docs/results/fashion-mnist-front.json): the model whose rows to plan with")
    parser.add_argument("--table-seed", type=integer(0), default=None, help="study table: the training seed")
    parser.add_argument("--metric", default=None, help="study table: the metric column to rank by (fid, fd_fmnist)")
    parser.add_argument("--scale", type=number(low=0), default=None,
                        help="proxy table: compare cfg / ccfg at this lambda")
    parser.add_argument("--seeds", default="0-7", help="proxy table: seeds to sample")
    parser.add_argument("--reference-steps", type=integer(1), default=50,
                        help="proxy table: Heun steps of the reference")
    parser.add_argument("--save-table", default=None, help="write the table used to this JSON file")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print the choice as JSON")


def _check_table_out(path, overwrite: bool = False) -> None:
    """An existing --save-table is replaced only if it is a planner table (what this command writes)."""
    from elit.sampling.planner import load_table
    try:
        load_table(path)
    except UserError as e:
        raise UserError(f"--save-table {path} exists and is not a planner table ({e}); choose another file, or "
                        f"move that one") from None


def run(args) -> int:
    from elit.hub import load_pretrained, read_config
    from elit.sampling.planner import PROXY_METRIC, build_table, choose, command_for, describe, load_table
    config, _ = read_config(args.model)  # refuses a folder that is not an elit model
    if args.save_table:   # someone else's file is refused before the table is built
        output_file(args.save_table, "--save-table")
        if pathlib.Path(args.save_table).exists():
            _check_table_out(args.save_table)
    if not config.elastic:
        raise UserError(f"{args.model} is a plain backbone without budgets; `elit plan` needs an ELIT model")
    if not args.table and (args.table_model or args.table_seed is not None or args.metric):
        raise UserError("--table-model, --table-seed and --metric choose rows of a study --table; give --table")
    if args.table:
        rows = load_table(args.table, args.table_model, args.table_seed, args.metric)
    else:
        model = load_pretrained(args.model, device=resolve_device(args.device))
        print(f"elit plan: no --table; building a proxy table ({PROXY_METRIC}, NOT FID) from seeds {args.seeds}")
        rows = build_table(model, args.seeds, scale=args.scale, reference_steps=args.reference_steps)
    if args.save_table:
        with guarded_output(args.save_table, "elit plan", kind="file", flag="--save-table", ours=_check_table_out):
            write_json(args.save_table, rows)
    best = choose(rows, args.target_gflops, args.target_seconds)
    command = command_for(best, args.model)
    if args.json:
        print(json.dumps({"choice": best, "command": command}, indent=1))
        return 0
    cost = (f"{best['gflops_per_image']:.2f} GFLOPs per image (2 x multiply-adds)"
            + (f", {best['seconds_per_image']:.4g} s per image" if "seconds_per_image" in best else ""))
    print(f"chosen: {describe(best)}")
    print(f"  {best['metric']} = {best['value']:.4g} ({'lower' if best['lower_is_better'] else 'higher'} is better); "
          f"{cost}")
    if best["metric"] == PROXY_METRIC:
        print("  (proxy score, not FID: distance to an expensive reference sampler from the same seeds)")
    print(f"  reproduce: {command}")
    return 0
