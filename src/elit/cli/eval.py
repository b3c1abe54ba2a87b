"""`elit eval`: a budget sweep. Sample each model at each (budget, guidance, scale), measure FID (or
other metrics) against a reference, print the table, and optionally save the rows (resumable)
and a quality-vs-GFLOPs plot.

    elit eval --model runs/main-job/model --ref fmnist-test --metrics fid,fd_fmnist --budgets 1,4,16 --json rows.json
"""
from __future__ import annotations

import contextlib
import pathlib

from elit._output import guarded_output
from elit.cli._args import integer, output_file, resolve_device
from elit.errors import UserError

HELP = "budget sweep: generate and measure quality vs GFLOPs"


def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="model folder; repeat for several (optionally LABEL=DIR)")
    parser.add_argument("--budgets", default=None, help="comma-separated latents per group (default: all)")
    parser.add_argument("--guidance", default="none", help="comma-separated: none,cfg,ccfg,ag")
    parser.add_argument("--scales", "--scale", dest="scales", default="1.0",
                        help="comma-separated guidance scales lambda (0 = none; w = 1 + lambda)")
    parser.add_argument("--weak-budget", type=integer(1), default=None, help="weak pass budget (default: the lowest)")
    parser.add_argument("--num", type=integer(2, "a covariance needs two samples; FID needs thousands"), default=2000, help="samples per row (FID needs thousands)")
    parser.add_argument("--ref", action="append", required=True,
                        help="reference: stats .npz, image folder, ADM .npz or fmnist-test; NET=REF per network; "
                             "video models: moving-fmnist-test or an .npz of clips")
    parser.add_argument("--metrics", default="fid", help="comma-separated: fid,fdd,fd_fmnist,is,precision,recall,kid; "
                        "video models add fd_fmnist_clip,class_consistency,label_accuracy,fvd (frame metrics "
                        "are measured per frame)")
    parser.add_argument("--ref-num", type=integer(2), default=2000, help="video models: reference clips to measure")
    parser.add_argument("--i3d-weights", default=None, help="video models, fvd: the I3D TorchScript "
                        "(i3d_torchscript.pt, as StyleGAN-V's FVD uses)")
    parser.add_argument("--steps", type=integer(1), default=40, help="ODE steps per sample (default 40)")
    parser.add_argument("--sampler", default="euler", choices=["euler", "heun"],
                        help="ODE solver (Heun makes 2 model calls per step; default euler)")
    parser.add_argument("--batch-size", type=integer(1), default=64, help="images per forward pass (default 64)")
    from elit.cli import add_precision_argument
    add_precision_argument(parser)
    parser.add_argument("--seed-start", type=integer(0), default=0,
                        help="row i uses seeds seed-start .. seed-start + num - 1 (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--json", default=None, help="write (and resume from) the rows as JSON")
    parser.add_argument("--plot", default=None, help="write a quality-vs-GFLOPs plot (PNG)")
    parser.add_argument("--plot-metric", default=None, help="metric on the plot's y axis (default: the first)")
    parser.add_argument("--fd-method", default="sqrtm", choices=["sqrtm", "eigh"],
                        help="matrix square root of the Frechet distance: scipy sqrtm (the pytorch-fid/ADM "
                             "recipe) or a symmetric eigendecomposition (same value, faster)")
    parser.add_argument("--vae", default=None, help="diffusers VAE that decodes latent-space models' samples: "
                        "AutoencoderKL, or AutoencoderKLCogVideoX / AutoencoderKLWan for video models")
    parser.add_argument("--vae-subfolder", default=None,
                        help="subfolder of --vae that holds the VAE (e.g. 'vae' for a whole pipeline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parse_list(text: str, cast, what: str) -> list:
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list, got {text!r}") from None


def run(args) -> int:
    from elit.eval.report import check_plot_out, format_table, plot_quality_vs_gflops
    from elit.eval.sweep import read_rows, run_sweep, sweep_settings
    from elit._precision import set_model_precision
    from elit.hub import load_pretrained
    from elit.sampling.distributed import Shards

    shards = Shards.from_env(args.device)   # under torchrun: rank 0 measures, every rank generates
    device = shards.device or resolve_device(args.device)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path and shards.is_main:
            output_file(path, flag)
    if args.json and shards.is_main:
        read_rows(args.json)   # someone else's file is refused now, not after the models are loaded
    if args.plot and shards.is_main and pathlib.Path(args.plot).exists():
        check_plot_out(args.plot)
    from elit.hub import WEIGHTS_NAME
    from elit._io import file_sha256
    models, fingerprints = {}, {}
    for spec in args.model:
        label, _, path = spec.rpartition("=") if "=" in spec else (None, None, spec)
        label = label or pathlib.Path(path).name
        if label in models:   # runs/a/model and runs/b/model: both "model", and one row key
            raise UserError(f"two models are named {label!r}; name them with LABEL=DIR")
        models[label] = load_pretrained(path, device=device)
        set_model_precision(models[label], args.precision, args.batch_size, announce=(
            lambda text, label=label: print(f"elit eval: model {label}: {text}")) if shards.is_main else None)
        fingerprints[label] = file_sha256(pathlib.Path(path) / WEIGHTS_NAME) if args.json else None
    guidances = _parse_list(args.guidance, str, "guidance")
    bad = [g for g in guidances if g not in ("none", "cfg", "ccfg", "ag")]
    if bad:
        raise UserError(f"unknown guidance mode(s) {bad}; choose from none, cfg, ccfg, ag")
    scales = _parse_list(args.scales, float, "scales")
    metrics = _parse_list(args.metrics, str, "metrics")
    refs = {}
    for r in args.ref:
        net, sep, path = r.partition("=")
        if sep and net in ("inception", "dinov2", "fmnist"):
            refs[net] = path
        else:
            refs = r
    asked = _parse_list(args.budgets, int, "budgets") if args.budgets else None
    settings = {}
    for label, m in models.items():
        if not m.budgets:       # a plain backbone: one row per guidance setting, no budgets
            settings[label] = sweep_settings([None], guidances, scales, None, None)
            continue
        budgets = asked or m.budgets
        bad = [b for b in budgets if b not in m.budgets]
        if bad:
            raise UserError(f"budgets {bad} are not valid for model {label} (valid: {m.budgets})")
        settings[label] = sweep_settings(budgets, guidances, scales, args.weak_budget, m.budgets[0])
    decode = None
    if args.vae:   # every model checked against the VAE's config (kind, channels) before its weights load
        from elit.vae import LatentDecoder, check_vae, load_vae
        for label, m in models.items():
            check_vae(m.config, args.vae, args.vae_subfolder, what=f"model {label}")
        decode = LatentDecoder(load_vae(args.vae, args.vae_subfolder, device=device))
    with contextlib.ExitStack() as stack:   # one sweep per rows file (it is resumed and rewritten)
        if args.json and shards.is_main:
            stack.enter_context(guarded_output(args.json, "elit eval", kind="file", flag="--json",
                                               ours=lambda path, _: read_rows(path)))
        if args.plot and shards.is_main:
            stack.enter_context(guarded_output(args.plot, "elit eval", kind="file", flag="--plot", ours=check_plot_out))
        rows = run_sweep(models, settings, num=args.num, steps=args.steps, sampler=args.sampler, metrics=metrics,
                         ref=refs, batch_size=args.batch_size, json_path=args.json, progress=not args.no_progress,
                         seed_start=args.seed_start, fd_method=args.fd_method, decode=decode, ref_num=args.ref_num,
                         i3d_weights=args.i3d_weights, shards=shards, fingerprints=fingerprints)
    if not shards.is_main:
        return 0
    print(format_table(rows, metrics))
    for m, proto in rows[-1]["protocols"].items() if rows else []:
        print(f"{m}: {proto}")
    print(f"steps {args.steps} ({args.sampler}); GFLOPs per image for the whole run, 2 x multiply-adds")
    if args.plot:
        print(f"plot: {plot_quality_vs_gflops(rows, args.plot_metric or metrics[0], args.plot)}")
    return 0
