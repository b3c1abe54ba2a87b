"""`elit flops`: GFLOPs per image of one forward at each budget, analytic and measured, and of a
whole sampling run (steps x guidance passes).

    elit flops --model ELIT-DiT-XL/2 --budgets 1,4,16
    elit flops --model runs/main-job/model --steps 40 --guidance ccfg
"""
from __future__ import annotations

import json

from elit.cli._args import integer
from elit.errors import UserError

HELP = "GFLOPs per forward (and per sampling run) at each budget"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="preset name (e.g. ELIT-DiT-XL/2) or a model folder")
    parser.add_argument("--input-size", type=integer(1), default=None,
                        help="latent height/width (32 = 256px, 64 = 512px with an 8x VAE); default: the model's")
    parser.add_argument("--budgets", default=None, help="comma-separated latents per group (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per budget")
    parser.add_argument("--no-measure", action="store_true", help="analytic count only (skip FlopCounterMode)")
    sampling = parser.add_argument_group("cost of a sampling run (adds sample_gflops per row)")
    sampling.add_argument("--steps", type=integer(1), default=None, help="ODE steps of the sampling run")
    sampling.add_argument("--sampler", default="euler", choices=["euler", "heun"],
                          help="ODE solver (Heun makes 2 model calls per step; default euler)")
    sampling.add_argument("--guidance", default="none", help="none | cfg | ccfg | ag (default none)")
    sampling.add_argument("--weak-budget", type=integer(1), default=None,
                          help="ccfg / ag weak pass budget (default: the lowest)")
    sampling.add_argument("--schedule", default=None, help="per-step budget rule (see `elit sample --help`)")


def _parse_budgets(text: str | None, space) -> list:
    if text is None:
        return space.budgets or [None]
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--budgets must be comma-separated integers (latents per group), got {text!r}") from None
    if not space.elastic:
        raise UserError("this model has no latent interface; drop --budgets")
    bad = [b for b in budgets if b not in space]
    if bad:
        raise UserError(f"budgets {bad} are not valid for this model; valid: {space.min_budget}..{space.latents_per_group}")
    return budgets


def run(args) -> int:
    from elit.cost import built_for, flops_table
    from elit.hub import resolve_model_config
    config = resolve_model_config(args.model)
    size = args.input_size or config.backbone.input_size
    config = built_for(config, size)
    budgets = _parse_budgets(args.budgets, config.budget_space)
    rows = flops_table(config, budgets, measure=not args.no_measure)
    for row in rows:
        row["model"] = args.model
        if args.steps is not None:
            from elit.sampling import sampling_gflops
            try:  # a schedule replaces the row's budget; autoguidance has no row at the lowest budget
                row["sample_gflops"] = round(sampling_gflops(
                    config, steps=args.steps,
                    budget=None if args.schedule else row["latents_per_group"],
                    guidance=args.guidance, weak_budget=args.weak_budget, schedule=args.schedule,
                    sampler=args.sampler), 4)
            except UserError as e:
                if len(rows) == 1:
                    raise
                row["sample_gflops"], row["sample_note"] = None, str(e)
    if args.steps is not None and all(row.get("sample_gflops") is None for row in rows):
        raise UserError(rows[0]["sample_note"])   # no budget can run these settings: the settings are wrong
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{args.model} at input size {size}: GFLOPs per image, one forward, batch 1 "
          f"(FLOPs = 2 x multiply-adds, attention included)")
    head = f"{'latents/group':>13} {'measured':>10} {'analytic':>10} {'of full':>8}"
    if args.steps is not None:
        head += f" {'sampling run':>13}"
    print(head)
    for row in rows:
        b = "-" if row["latents_per_group"] is None else row["latents_per_group"]
        measured = f"{row['gflops']:>10.3f}" if row["measured"] else f"{'-':>10}"
        line = f"{b:>13} {measured} {row['analytic_gflops']:>10.3f} {row['fraction_of_full']:>8.1%}"
        if row.get("sample_gflops") is not None:
            line += f" {row['sample_gflops']:>13.2f}"
        elif "sample_note" in row:
            line += f"  (no run: {row['sample_note']})"
        print(line)
    if args.steps is not None:
        print(f"sampling run: {args.steps} {args.sampler} steps, guidance {args.guidance}"
              + (f", weak budget {args.weak_budget}" if args.weak_budget else "") + " (GFLOPs per image)")
    return 0
