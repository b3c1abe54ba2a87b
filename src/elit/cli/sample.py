"""`elit sample`: one PNG per seed (000007.png for seed 7), an optional grid and an ADM-style .npz.

    elit sample --model runs/main-job/model --budget 4 --guidance ccfg --scale 0.25 \
        --steps 40 --seeds 0-63 --out runs/main-job/samples --grid --npz

Everything is validated before the first image is drawn. The folder is one run: its sampling.json
records the settings, so the same command again resumes (seeds already written are skipped), other
settings are refused unless --overwrite, and `elit fid` skips the grid and the .npz. PNGs are
written atomically, one by one. Labels default to seed % num_classes. The scale is lambda
(0 = none); --w takes w = 1 + lambda. A video model writes an animated GIF and an mp4 per seed, and
its grid is filmstrips (grid.png) plus the same grid animated (grid.gif). Under
`torchrun --nproc_per_node=K -m elit sample ...` the batches are dealt out across the processes and
rank 0 writes exactly the files one process writes (elit.sampling.distributed).
"""
from __future__ import annotations

import pathlib

from elit.cli._args import integer, number, output_folder, resolve_device
from elit.errors import UserError

HELP = "sample a trained model at any budget with optional guidance"
DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser) -> None:
    from elit.sampling import MODES, SAMPLERS
    parser.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="output folder for <seed:06d>.png files; rerunning the same "
                                                     "command resumes it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the samples of other settings in --out (by default they are refused)")
    parser.add_argument("--budget", default=None, help="latents per group (int), a fraction (0.25) or 'full' "
                                                        "(default full)")
    parser.add_argument("--schedule", default=None, help="per-step budget rule 'B@T,...,B', e.g. '4@0.5,16' = "
                                                          "budget 4 while t > 0.5, then 16 (t=1 is noise)")
    parser.add_argument("--guidance", default="none", help=f"{' | '.join(MODES)} (default none)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", default=None, help="guidance scale lambda (0 = none)")
    scale.add_argument("--w", default=None, help="guidance scale as w = 1 + lambda (DiT's cfg_scale)")
    parser.add_argument("--weak-budget", default=None, help="ccfg / ag weak pass budget (default: lowest)")
    parser.add_argument("--interval", default=None, help="apply guidance only for t in LO,HI")
    parser.add_argument("--steps", type=integer(1), default=40, help="ODE steps from noise to data (default 40)")
    parser.add_argument("--sampler", default="euler", help=f"ODE solver: {' | '.join(SAMPLERS)} (Heun makes 2 "
                                                           f"model calls per step; default euler)")
    parser.add_argument("--shift", type=number(above=0), default=1.0,
                        help="time shift s: t' = s t / (1 + (s-1) t) (default 1 = none)")
    parser.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 0-9,20 (one image per seed)")
    parser.add_argument("--labels", default=None, help="one class for all, or one per seed (comma list); "
                                                        "default seed %% num_classes; 'null' = unconditional")
    parser.add_argument("--batch-size", type=integer(1), default=64,
                        help="images per forward pass (memory vs speed; images do not depend on it)")
    parser.add_argument("--cache", type=number(low=0), default=None,
                        help="TeaCache threshold (0 = call every step)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png (one column per class, "
                                                            "up to 8 rows); elit fid skips it")
    parser.add_argument("--npz", action="store_true", help="also write samples_NxHxWxC.npz (arr_0 uint8 "
                                                           "NHWC, arr_1 labels); elit fid skips it")
    parser.add_argument("--vae", default=None, help="diffusers VAE (folder or hub name) that decodes a latent-space "
                        "model's samples to pixels: AutoencoderKL for images, AutoencoderKLCogVideoX / "
                        "AutoencoderKLWan for video (the kind is read from its config.json)")
    parser.add_argument("--vae-subfolder", default=None,
                        help="subfolder of --vae that holds the VAE (e.g. 'vae' for a whole pipeline)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model compute dtype (default float32)")


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
    from elit.sampling import parse_budget
    return dict(steps=args.steps, sampler=args.sampler, budget=None if args.schedule else parse_budget(args.budget or "full"),
                schedule=args.schedule, guidance=args.guidance, scale=args.scale, w=args.w,
                weak_budget=None if args.weak_budget is None else parse_budget(args.weak_budget),
                interval=args.interval, shift=args.shift)


def run_settings(args, plan) -> dict:
    """What determines the images (so a folder holds one run): not the seeds, batch size or device."""
    from elit.hub import CONFIG_NAME, WEIGHTS_NAME
    from elit._io import file_sha256
    model = pathlib.Path(args.model)
    return {"model_weights_sha256": file_sha256(model / WEIGHTS_NAME),
            "model_config_sha256": file_sha256(model / CONFIG_NAME), "plan": plan.describe(),
            "shift": args.shift, "cache": args.cache, "dtype": args.dtype, "vae": args.vae,
            "vae_subfolder": args.vae_subfolder}


def run(args) -> int:
    import torch

    from elit._output import guarded_output
    from elit.hub import load_pretrained
    from elit.sampling import parse_seeds, plan_gflops, plan_run, resolve_labels
    from elit.sampling.distributed import Shards
    from elit.sampling.folder import CLIP_FILES, IMAGE_FILES, RECORD, SampleFolder
    from elit.sampling.solvers import check_prediction
    if args.schedule and args.budget:
        raise UserError("give either --budget or --schedule, not both")
    out = output_folder(args.out)
    shards = Shards.from_env(args.device)      # under torchrun: every rank samples, rank 0 writes
    device = shards.device or resolve_device(args.device)
    model = load_pretrained(args.model, device=device, dtype=getattr(torch, args.dtype))  # refuses NaN weights
    video = len(model.sample_shape()) == 4
    from elit.vae import decoder_for
    decode = decoder_for(model.config, args.vae, args.vae_subfolder, device)   # refuses a VAE of the other kind
    if model.config.condition == "text":
        raise UserError("this is a text-to-image model: elit sample takes class labels, not prompts; sample it from "
                        "Python with elit.sample(model, seeds, labels=TextCondition(...)) or through a diffusers "
                        "pipeline (docs/text-to-image.md)")
    check_prediction(model, args.sampler)     # e.g. ddim on a velocity model: refused before any file is written
    options = options_from_args(args)
    seeds = parse_seeds(args.seeds)
    labels = resolve_labels(_labels_arg(args.labels, model), seeds, model.num_classes)
    plan = plan_run(model, **options)  # validate before writing
    gflops = plan_gflops(model.config, plan)
    print(f"elit sample: {plan.describe()}; {gflops:.2f} GFLOPs per image "
          f"(analytic, 2 x multiply-adds; cache skips not subtracted)")
    info = {"model": str(args.model), "gflops_per_image": gflops, "labels": args.labels or "seed % num_classes",
            "threads": torch.get_num_threads(),   # the images' last bits depend on it (a fixed count: identical)
            "last_options": {k: v for k, v in vars(args).items() if k != "command"}}
    label_of = dict(zip(seeds, labels)) if labels is not None else None
    if not shards.is_main:    # compute this rank's batches of what rank 0 still needs; rank 0 writes
        todo = shards.broadcast(None)
        if isinstance(todo, dict):
            raise UserError(todo["error"])
        _sample_into(None, model, todo, label_of and [label_of[s] for s in todo], options, args, decode, shards)
        return 0
    # A first run that fails (NaN samples, say) leaves no folder holding only its record behind.
    with guarded_output(out, "elit sample", kind="folder", scaffolding=(RECORD,)):
        folder = SampleFolder(out, run_settings(args, plan), info, CLIP_FILES if video else IMAGE_FILES)
        try:
            todo = folder.prepare(seeds, labels, overwrite=args.overwrite)
        except UserError as e:
            shards.broadcast({"error": str(e)})   # the other ranks stop too
            raise
        shards.broadcast(todo)
        if len(todo) < len(seeds):
            print(f"elit sample: {len(seeds) - len(todo)} of {len(seeds)} images already in {out} "
                  f"(same settings); sampling the other {len(todo)}")
        cache = _sample_into(folder, model, todo, label_of and [label_of[s] for s in todo], options, args, decode,
                             shards)
        written = _extras(out, model, seeds, labels, args, video, decoded=decode is not None)
        folder.finish([p.name for p in written])
    kind = "clips (GIF + mp4)" if video else "PNGs"
    print(f"wrote {len(todo)} {kind} to {out} ({len(seeds)} for these seeds)" + "".join(f", {p.name}" for p in written))
    if cache is not None:
        print(f"cache: {cache.calls} forward calls, {cache.skips} skipped")
    return 0


def _sample_into(folder, model, seeds, labels, options, args, decode, shards):
    """Sample `seeds`, check every batch, write its files, then record them (rank 0; the other ranks
    of a torchrun group, folder None, only compute and send their batches)."""
    import torch

    cache = None
    if args.cache is not None:
        from elit.sampling import TeaCache
        cache = TeaCache(model, args.cache)
    if not seeds:
        return cache
    from elit.sampling.folder import write_batch
    for batch_seeds, _, images in shards.batches(model, seeds, labels, batch_size=args.batch_size,
                                                 progress=shards.is_main, cache=cache, **options):
        images = decode(images) if decode else images
        if not bool(torch.isfinite(images).all()):
            raise UserError(f"the model produced NaN/Inf samples (seeds {batch_seeds[0]}-{batch_seeds[-1]}): its "
                            f"weights are broken or the settings overflow (try --dtype float32); nothing of this "
                            f"batch was written")
        write_batch(folder.out, batch_seeds, images)
        folder.add(batch_seeds)
    return cache


def _extras(out, model, seeds, labels, args, video: bool = False, decoded: bool = False) -> list[pathlib.Path]:
    """The grid and the .npz, over every requested seed (read back from the PNGs, or a video model's
    GIFs): (N, H, W, C) or (N, T, H, W, C) uint8."""
    import numpy as np
    from PIL import Image

    from elit.sampling.folder import png_name
    channels = 3 if decoded else model.sample_shape()[0]     # a VAE decodes to RGB

    def read(some):
        if video:
            from elit.video import read_frames
            return np.stack([read_frames(out / f"{s:06d}.gif")[..., :channels] for s in some])
        pixels = np.stack([np.asarray(Image.open(out / png_name(s))) for s in some])
        return pixels[..., None] if pixels.ndim == 3 else pixels
    written = []
    if args.grid:
        n = min(len(seeds), GRID_SEEDS)
        written += _grid(out / "grid.png", read(seeds[:n]), seeds[:n], labels and labels[:n], model, args.model)
    if args.npz:
        pixels = read(seeds)
        from elit._io import atomic_write
        path = out / f"samples_{'x'.join(map(str, pixels.shape))}.npz"
        extra = {} if labels is None else {"arr_1": np.asarray(labels, dtype=np.int64)}
        with atomic_write(path) as f:
            np.savez(f, arr_0=pixels, **extra)
        written.append(path)
    return written


GRID_SEEDS, GRID_COLUMNS = 100, 16   # the grid shows the first seeds only, so it stays readable


def _grid(path, pixels, seeds, labels, model, model_dir, max_rows: int = 8) -> list[pathlib.Path]:
    """Class-conditional: one column per class (the k-th image of each class in row k), headed by the
    class name; at most GRID_COLUMNS classes. Unconditional: rows of 8 seeds. Clips (N, T, H, W, C):
    filmstrips in the PNG, and the same grid animated in a GIF beside it."""
    import torch

    from elit.hub import read_class_names
    from elit.viz import budget_grid
    images = torch.from_numpy(pixels).movedim(-1, 1).float() / 127.5 - 1      # (N, C, [T,] H, W)

    def save(rows, row_labels, **kw):
        if images.dim() == 5:
            from elit.video import clip_grid
            return clip_grid(rows, row_labels, path, **kw)
        return [budget_grid(rows, row_labels, path, **kw)]
    if labels is None:
        rows = [images[i:i + 8] for i in range(0, min(len(seeds), 8 * max_rows), 8)]
        row_labels = [f"seeds {seeds[i]}-{seeds[min(i + 8, len(seeds)) - 1]}" for i in range(0, 8 * len(rows), 8)]
        return save(rows, row_labels)
    classes = sorted(set(labels))[:GRID_COLUMNS]
    names = read_class_names(model_dir) or [f"class {k}" for k in range(model.num_classes)]
    headers = ["unconditional" if k == model.num_classes else names[k] for k in classes]
    blank = torch.ones_like(images[0])   # white where a class has fewer images than the row needs
    per_class = {k: [i for i, y in enumerate(labels) if y == k] for k in classes}
    depth = min(max_rows, max(len(v) for v in per_class.values()))
    cells = [[per_class[k][r] if r < len(per_class[k]) else None for k in classes] for r in range(depth)]
    rows = [torch.stack([blank if i is None else images[i] for i in row]) for row in cells]
    row_seeds = [[seeds[i] for i in row if i is not None] for row in cells]
    row_labels = [f"seeds {min(s)}-{max(s)}" if len(s) > 1 else f"seed {s[0]}" for s in row_seeds]
    return save(rows, row_labels, column_labels=headers)
