"""`elit sample`: one PNG per seed (000007.png for seed 7), an optional grid and an ADM-style .npz.
A video model writes an animated GIF and an mp4 per seed, and its grid is filmstrips (grid.png)
plus the same grid animated (grid.gif).

    elit sample --model runs/fmnist/model --budget 4 --guidance ccfg --scale 0.25 \
        --steps 40 --seeds 0-63 --out samples/ --grid --npz

Everything is validated before the first image is drawn; PNGs are written into a temporary folder
beside --out and moved into place at the end, so a failure never leaves half a run behind.
Labels default to seed % num_classes. The scale is lambda (0 = none); --w takes w = 1 + lambda.
"""
from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import torch

from elit._io import atomic_write, temp_dir_beside, write_json
from elit.errors import UserError
from elit.sampling import MODES, SAMPLERS, parse_budget, parse_seeds, plan_gflops, plan_run, resolve_labels
from elit.sampling.distributed import Shards
from elit.viz import budget_grid, to_pil, to_uint8

HELP = "sample a trained model at any budget with optional guidance"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="output folder for <seed:06d>.png files")
    parser.add_argument("--budget", default=None, help="latents per group (int), a fraction (0.25) or 'full' "
                                                        "(default full)")
    parser.add_argument("--schedule", default=None, help="per-step budget rule 'B@T,...,B', e.g. '4@0.5,16' = "
                                                          "budget 4 while t > 0.5, then 16 (t=1 is noise)")
    parser.add_argument("--guidance", default="none", help=f"{' | '.join(MODES)}")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", default=None, help="guidance scale lambda (0 = none)")
    scale.add_argument("--w", default=None, help="guidance scale as w = 1 + lambda (DiT's cfg_scale)")
    parser.add_argument("--weak-budget", default=None, help="ccfg / ag weak pass budget (default: lowest)")
    parser.add_argument("--interval", default=None, help="apply guidance only for t in LO,HI")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sampler", default="euler", help=" | ".join(SAMPLERS))
    parser.add_argument("--shift", type=float, default=1.0, help="time shift s: t' = s t / (1 + (s-1) t)")
    parser.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 0-9,20 (one image per seed)")
    parser.add_argument("--labels", default=None, help="one class for all, or one per seed (comma list); "
                                                        "default seed %% num_classes; 'null' = unconditional")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", type=float, default=None, help="TeaCache threshold (0 = call every step)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png (rows of 8, labelled)")
    parser.add_argument("--npz", action="store_true", help="also write samples_NxHxWxC.npz (arr_0 uint8 "
                                                           "NHWC, arr_1 labels)")
    parser.add_argument("--vae", default=None, help="diffusers AutoencoderKL (folder or hub name) that decodes "
                                                     "a latent-space model's samples to pixels")
    parser.add_argument("--vae-subfolder", default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))


def _labels_arg(text, model):
    if text is None:
        return None
    if text.strip().lower() == "null":
        if model.null_class_id is None:
            raise UserError("--labels null needs a class-conditional model")
        return model.null_class_id
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"cannot read labels {text!r}: use one int or a comma list") from None


def options_from_args(args) -> dict:
    """The `elit.sample` keywords that the command-line arguments describe."""
    return dict(steps=args.steps, sampler=args.sampler, budget=None if args.schedule else parse_budget(args.budget or "full"),
                schedule=args.schedule, guidance=args.guidance, scale=args.scale, w=args.w,
                weak_budget=None if args.weak_budget is None else parse_budget(args.weak_budget),
                interval=args.interval, shift=args.shift)


def run(args) -> int:
    from elit.hub import load_pretrained
    if args.schedule and args.budget:
        raise UserError("give either --budget or --schedule, not both")
    shards = Shards.from_env(args.device)   # under torchrun: this process's share of the batches
    device = shards.device or args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_pretrained(args.model, device=device, dtype=DTYPES[args.dtype])
    decode = None
    if args.vae:
        from elit.vae import LatentDecoder, load_vae
        decode = LatentDecoder(load_vae(args.vae, args.vae_subfolder, device=device))
    if len(model.sample_shape()) == 4 and args.vae:
        raise UserError("--vae decodes image latents; decoding video latents is not supported by elit sample yet "
                        "(sample the latents with --npz and decode them with your video VAE)")
    if model.config.backbone.in_channels not in (1, 3) and not args.vae:
        raise UserError(f"this model samples {model.config.backbone.in_channels}-channel latents; pass --vae with the "
                         f"AutoencoderKL its training latents came from to decode them to PNG")
    options = options_from_args(args)
    seeds = parse_seeds(args.seeds)
    labels = resolve_labels(_labels_arg(args.labels, model), seeds, model.num_classes)
    plan = plan_run(model, conditional=model.num_classes > 0, **options)  # validate before writing
    gflops = plan_gflops(model.config, plan)
    print(f"elit sample: {plan.describe()}; {gflops:.2f} GFLOPs per image "
          f"(analytic, 2 x multiply-adds; cache skips not subtracted)")

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir_beside(out)
    try:
        arrays, cache = [], None
        if args.cache is not None:
            from elit.sampling import TeaCache
            cache = TeaCache(model, args.cache)
        for batch_seeds, _, images in shards.batches(model, seeds, labels, batch_size=args.batch_size,
                                                   progress=True, cache=cache, **options):
            arrays.append(write_batch(staging, batch_seeds, decode(images) if decode else images))
        if not shards.is_main:   # rank 0 received every batch and writes every file
            return 0
        pixels = np.concatenate(arrays)
        written = _finish(out, staging, seeds, labels, pixels, args, plan, gflops, cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kind = "clips (GIF + mp4)" if len(model.sample_shape()) == 4 else "PNGs"
    print(f"wrote {len(seeds)} {kind} to {out}" + "".join(f", {p.name}" for p in written))
    if cache is not None:
        print(f"cache: {cache.calls} forward calls, {cache.skips} skipped")
    return 0


def write_batch(staging: pathlib.Path, seeds: list[int], images: torch.Tensor) -> np.ndarray:
    """One file per seed into `staging`: a PNG per image, or an animated GIF and an mp4 per clip of
    a video model. Returns the uint8 pixels, (N, H, W, C) or (N, T, H, W, C)."""
    if images.dim() == 5:
        from elit.video import clips_to_uint8, save_gif, save_mp4
        clips = clips_to_uint8(images)
        for seed, clip in zip(seeds, clips):
            save_gif(clip, staging / f"{seed:06d}.gif")
            save_mp4(clip, staging / f"{seed:06d}.mp4")
        return clips
    pixels = to_uint8(images)
    for seed, image in zip(seeds, pixels):
        to_pil(image).save(staging / f"{seed:06d}.png")
    return pixels


def _finish(out, staging, seeds, labels, pixels, args, plan, gflops, cache) -> list[pathlib.Path]:
    """Move the finished PNGs into place, then the grid, .npz and run record (each atomically)."""
    out.mkdir(exist_ok=True)
    for seed in seeds:
        for suffix in (".png", ".gif", ".mp4"):
            if (staging / f"{seed:06d}{suffix}").is_file():
                os.replace(staging / f"{seed:06d}{suffix}", out / f"{seed:06d}{suffix}")
    written = []
    if args.grid:
        channels_first = (0, 3, 1, 2) if pixels.ndim == 4 else (0, 4, 1, 2, 3)
        rows = [torch.from_numpy(pixels[i:i + 8]).permute(*channels_first).float() / 127.5 - 1
                for i in range(0, min(len(pixels), 64), 8)]
        row_labels = [f"seeds {seeds[i]}-{seeds[min(i + 8, len(seeds)) - 1]}" for i in range(0, len(rows) * 8, 8)]
        if pixels.ndim == 5:   # filmstrips in grid.png, and grid.gif animating the same layout
            from elit.video import clip_grid
            written += clip_grid(rows, row_labels, out / "grid.png")
        else:
            written.append(budget_grid(rows, row_labels, out / "grid.png"))
    if args.npz:
        path = out / f"samples_{'x'.join(map(str, pixels.shape))}.npz"
        extra = {} if labels is None else {"arr_1": np.asarray(labels, dtype=np.int64)}
        with atomic_write(path) as f:
            np.savez(f, arr_0=pixels, **extra)
        written.append(path)
    record = dict(model=str(args.model), plan=plan.describe(), gflops_per_image=gflops, seeds=args.seeds,
                  labels=args.labels or "seed % num_classes", options=vars(args) | {"command": "sample"},
                  cache=None if cache is None else dict(threshold=cache.threshold, calls=cache.calls,
                                                        skips=cache.skips))
    written.append(write_json(out / "sampling.json", record))
    return written
