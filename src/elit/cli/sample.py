"""`elit sample`: one PNG per seed (000007.png for seed 7), an optional grid and an ADM-style .npz.

    elit sample --model runs/main-job/model --budget 4 --guidance ccfg --scale 0.25 \
        --steps 40 --seeds 0-63 --out runs/main-job/samples --grid --npz
    elit sample --model runs/t2i/elit/model --prompt "a photo of a dress" --prompt "a sandal" \
        --seeds 0-3 --guidance ccfg --scale 1 --out runs/t2i-samples --grid

A text-to-image model takes prompts instead of labels (--prompt, repeatable, or --prompts FILE), each
sampled at every seed (p001-s000007.png: prompt 1, seed 7, from the same noise as seed 7 of every
other prompt), encoded by the text encoder of --pipeline (a diffusers pipeline folder) or of the
model folder (its text_encoder/); --negative-prompt is the unconditional input of cfg / ccfg
(default: the empty prompt). The grid's columns are the prompts.

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
    parser.add_argument("--prompt", action="append", default=None,
                        help="a text-to-image model's prompt; repeat for several (each is sampled at every seed)")
    parser.add_argument("--prompts", default=None, help="a text file of prompts, one per line (blank lines skipped), "
                                                         "after any --prompt")
    parser.add_argument("--negative-prompt", default=None,
                        help="text model: the unconditional input of cfg / ccfg (default: the empty prompt)")
    parser.add_argument("--pipeline", default=None,
                        help="diffusers pipeline folder (QwenImagePipeline, StableDiffusion3Pipeline, FluxPipeline, "
                             "WanPipeline) whose text encoder, and vae/ unless --vae, a text model uses; default: "
                             "the model folder's own text_encoder/ (and vae/)")
    parser.add_argument("--batch-size", type=integer(1), default=64,
                        help="images per forward pass (memory vs speed; images do not depend on it)")
    parser.add_argument("--cache", type=number(low=0), default=None,
                        help="TeaCache threshold (0 = call every step)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png (one column per class or prompt, "
                                                            "up to 8 rows); elit fid skips it")
    parser.add_argument("--npz", action="store_true", help="also write samples_NxHxWxC.npz (arr_0 uint8 "
                                                           "NHWC, arr_1 labels); elit fid skips it")
    parser.add_argument("--vae", default=None, help="diffusers VAE (folder or hub name) that decodes a latent-space "
                        "model's samples to pixels: AutoencoderKL for images, AutoencoderKLCogVideoX / "
                        "AutoencoderKLWan for video (the kind is read from its config.json); default: the vae/ "
                        "of --pipeline or of the model folder, if there is one")
    parser.add_argument("--vae-subfolder", default=None,
                        help="subfolder of --vae that holds the VAE (e.g. 'vae' for a whole pipeline)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="the dtype the weights are cast to (default float32); --precision bf16 autocasts instead")
    from elit.cli import add_precision_argument
    add_precision_argument(parser)


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


def read_prompts(args) -> list[str]:
    """--prompt values, then the lines of --prompts FILE (blank lines skipped)."""
    prompts = list(args.prompt or [])
    if args.prompts:
        path = pathlib.Path(args.prompts)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            from elit.errors import MissingInputError
            raise MissingInputError(f"--prompts {path} does not exist; give a text file with one prompt per line") \
                from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read --prompts {path}: {e}; give a UTF-8 text file, one prompt per line") from None
        prompts += [line for line in lines if line.strip()]
        if not prompts:
            raise UserError(f"--prompts {path} holds no prompt; write one per line")
    return prompts


def check_text_arguments(args, model, prompts: list[str]) -> None:
    """Prompts go with a text model and labels with a class model, never the other way round."""
    if model.config.condition == "text":
        if args.labels is not None:
            raise UserError("this is a text-to-image model: it takes --prompt TEXT (or --prompts FILE), not --labels")
        if not prompts:
            raise UserError("this is a text-to-image model: give --prompt TEXT (repeatable) or --prompts FILE "
                            "(one prompt per line)")
        return
    for flag, value in (("--prompt", args.prompt), ("--prompts", args.prompts),
                        ("--negative-prompt", args.negative_prompt), ("--pipeline", args.pipeline)):
        if value is not None:
            kind = "class-conditional: use --labels" if model.config.condition == "class" else "unconditional"
            raise UserError(f"{flag} is for text-to-image models; this model is {kind}")


def negative_prompt(args, plan) -> str | None:
    """The negative prompt a run uses: cfg / ccfg's unconditional input (default the empty prompt), else none."""
    uses = plan.guidance.mode in ("cfg", "ccfg") and plan.guidance.enabled
    if args.negative_prompt is not None and plan.guidance.mode not in ("cfg", "ccfg"):
        raise UserError(f"--negative-prompt is the unconditional input of cfg / ccfg; guidance "
                        f"{plan.guidance.mode!r} has none: give --guidance cfg or ccfg, or leave it out")
    return (args.negative_prompt if args.negative_prompt is not None else "") if uses else None


def run_settings(args, plan, vae, text: dict | None = None, precision: str = "fp32") -> dict:
    """What determines the images (so a folder holds one run): not the seeds, batch size or device.
    A text model adds its prompts, negative prompt and text encoder; bf16 passes add the precision
    (fp32, the default, is left implicit, as in the records written before there was a choice)."""
    from elit.hub import CONFIG_NAME, WEIGHTS_NAME
    from elit._io import file_sha256
    model = pathlib.Path(args.model)
    return {"model_weights_sha256": file_sha256(model / WEIGHTS_NAME),
            "model_config_sha256": file_sha256(model / CONFIG_NAME), "plan": plan.describe(),
            "shift": args.shift, "cache": args.cache, "dtype": args.dtype, "vae": vae[0],
            "vae_subfolder": vae[1], **(text or {}), **({"precision": precision} if precision != "fp32" else {})}


def run(args) -> int:
    import torch

    from elit._output import guarded_output
    from elit.hub import load_pretrained
    from elit.sampling import parse_seeds, plan_gflops, plan_run, resolve_labels
    from elit.sampling.distributed import Shards
    from elit.sampling.folder import CLIP_FILES, IMAGE_FILES, RECORD, SampleFolder
    from elit.sampling.solvers import MAX_SEEDS, check_prediction
    if args.schedule and args.budget:
        raise UserError("give either --budget or --schedule, not both")
    out = output_folder(args.out)
    prompts = read_prompts(args)
    shards = Shards.from_env(args.device)      # under torchrun: every rank samples, rank 0 writes
    device = shards.device or resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    model = load_pretrained(args.model, device=device, dtype=dtype)  # refuses NaN weights
    from elit._precision import set_model_precision
    precision = set_model_precision(model, args.precision, args.batch_size, announce=(
        lambda text: print(f"elit sample: {text}")) if shards.is_main else None)
    video = len(model.sample_shape()) == 4
    text = model.config.condition == "text"
    check_text_arguments(args, model, prompts)
    check_prediction(model, args.sampler)     # e.g. ddim on a velocity model: refused before any file is written
    options = options_from_args(args)
    seeds = parse_seeds(args.seeds)
    labels = None if text else resolve_labels(_labels_arg(args.labels, model), seeds, model.num_classes)
    plan = plan_run(model, **options)  # validate before writing
    from elit.vae import decoder_for, vae_beside
    vae = vae_beside(args.vae, args.vae_subfolder, args.pipeline, args.model)
    decode = decoder_for(model.config, *vae, device)   # refuses a VAE of the other kind
    items, conditions, record = seeds, None, {}
    if text:
        from elit.sampling.prompts import encode_prompts, load_text_encoder
        if len(prompts) * len(seeds) > MAX_SEEDS:
            raise UserError(f"{len(prompts)} prompts x {len(seeds):,} seeds ask for {len(prompts) * len(seeds):,} "
                            f"images; one call samples at most {MAX_SEEDS:,}: split the seeds over several calls")
        encoder = load_text_encoder(model.config, args.model, args.pipeline, device, dtype)
        negative = negative_prompt(args, plan)
        conditions = encode_prompts(model, encoder, prompts, negative)   # checked against the model: before writing
        record = {"prompts": prompts, "negative_prompt": negative, "text_encoder": encoder.describe()}
        del encoder                                # a pipeline's text encoder: its memory goes back before sampling
        items = [(k, s) for k in range(len(prompts)) for s in seeds]
    from elit.cost import with_text_tokens      # a text model's FLOPs count its prompts' encoded length
    gflops = plan_gflops(with_text_tokens(model.config, conditions and conditions[0].tokens), plan)
    print(f"elit sample: {plan.describe()}; {gflops:.2f} GFLOPs per image "
          f"(analytic, 2 x multiply-adds; cache skips not subtracted)")
    info = {"model": str(args.model), "gflops_per_image": gflops,
            "labels": "prompts" if text else args.labels or "seed % num_classes",
            "threads": torch.get_num_threads(),   # the images' last bits depend on it (a fixed count: identical)
            "precision": precision,                # and on this (auto may choose differently on another machine)
            "last_options": {k: v for k, v in vars(args).items() if k != "command"}}
    label_of = dict(zip(seeds, labels)) if labels is not None else None
    if not shards.is_main:    # compute this rank's batches of what rank 0 still needs; rank 0 writes
        todo = shards.broadcast(None)
        if isinstance(todo, dict):
            raise UserError(todo["error"])
        _sample_into(None, model, todo, label_of and [label_of[s] for s in todo], options, args, decode, shards,
                     conditions)
        return 0
    # A first run that fails (NaN samples, say) leaves no folder holding only its record behind.
    with guarded_output(out, "elit sample", kind="folder", scaffolding=(RECORD,)):
        folder = SampleFolder(out, run_settings(args, plan, vae, record, precision), info, CLIP_FILES if video else IMAGE_FILES)
        try:
            todo = folder.prepare(items, labels, overwrite=args.overwrite)
        except UserError as e:
            shards.broadcast({"error": str(e)})   # the other ranks stop too
            raise
        shards.broadcast(todo)
        if len(todo) < len(items):
            print(f"elit sample: {len(items) - len(todo)} of {len(items)} images already in {out} "
                  f"(same settings); sampling the other {len(todo)}")
        cache = _sample_into(folder, model, todo, label_of and [label_of[s] for s in todo], options, args, decode,
                             shards, conditions)
        written = _extras(out, model, items, labels, args, video, decoded=decode is not None, prompts=prompts)
        folder.finish([p.name for p in written])
    kind = "clips (GIF + mp4)" if video else "PNGs"
    print(f"wrote {len(todo)} {kind} to {out} ({len(items)} for these {'prompts and ' if text else ''}seeds)"
          + "".join(f", {p.name}" for p in written))
    if cache is not None:
        print(f"cache: {cache.calls} forward calls, {cache.skips} skipped")
    return 0


def _sample_into(folder, model, items, labels, options, args, decode, shards, conditions=None):
    """Sample `items`, check every batch, write its files, then record them (rank 0; the other ranks
    of a torchrun group, folder None, only compute and send their batches). A text model's items are
    (prompt, seed) pairs, sampled prompt by prompt from `conditions` (prompts, negative)."""
    import torch

    cache = None
    if args.cache is not None:
        from elit.sampling import TeaCache
        cache = TeaCache(model, args.cache)
    if not items:
        return cache
    from elit.sampling.folder import write_batch
    if conditions is None:
        groups = [(items, dict(labels=labels), lambda seeds: seeds)]
    else:
        prompts, negative = conditions
        groups = [([s for k, s in items if k == p], dict(labels=prompts[p], negative=negative),
                   lambda seeds, p=p: [(p, s) for s in seeds]) for p in range(len(prompts))]
    bar = None
    if shards.is_main and len(groups) > 1:    # one bar over every prompt's batches
        from elit.sampling.solvers import progress_bar
        steps = options["steps"] * sum(-(-len(g[0]) // args.batch_size) for g in groups)
        bar = progress_bar(steps, f"sampling {len(items)} images")
    try:
        for seeds, condition, named in groups:
            if not seeds:
                continue
            for batch_seeds, _, images in shards.batches(model, seeds, batch_size=args.batch_size, cache=cache,
                                                         progress=bar if bar is not None else shards.is_main,
                                                         **condition, **options):
                images = decode(images) if decode else images
                if not bool(torch.isfinite(images).all()):
                    raise UserError(f"the model produced NaN/Inf samples (seeds {batch_seeds[0]}-{batch_seeds[-1]}): "
                                    f"its weights are broken or the settings overflow (try --dtype float32); nothing "
                                    f"of this batch was written")
                write_batch(folder.out, named(batch_seeds), images)
                folder.add(named(batch_seeds))
    finally:
        if bar is not None:
            bar.close()
    return cache


def _extras(out, model, items, labels, args, video: bool = False, decoded: bool = False,
            prompts=None) -> list[pathlib.Path]:
    """The grid and the .npz, over every requested item (read back from the PNGs, or a video model's
    GIFs): (N, H, W, C) or (N, T, H, W, C) uint8."""
    import numpy as np
    from PIL import Image

    from elit.sampling.folder import CLIP_FILES, png_name, seed_files
    channels = 3 if decoded else model.sample_shape()[0]     # a VAE decodes to RGB

    def read(some):
        if video:
            from elit.video import read_frames
            return np.stack([read_frames(out / seed_files(s, CLIP_FILES)[0])[..., :channels] for s in some])
        pixels = np.stack([np.asarray(Image.open(out / png_name(s))) for s in some])
        return pixels[..., None] if pixels.ndim == 3 else pixels
    written = []
    if args.grid and prompts:
        written += _prompt_grid(out / "grid.png", read, items, prompts)
    elif args.grid:
        n = min(len(items), GRID_SEEDS)
        written += _grid(out / "grid.png", read(items[:n]), items[:n], labels and labels[:n], model, args.model)
    if args.npz:   # a text model's images in prompt-major order, without arr_1 (its prompts are in sampling.json)
        pixels = read(items)
        from elit._io import atomic_write
        path = out / f"samples_{'x'.join(map(str, pixels.shape))}.npz"
        extra = {} if labels is None else {"arr_1": np.asarray(labels, dtype=np.int64)}
        with atomic_write(path) as f:
            np.savez(f, arr_0=pixels, **extra)
        written.append(path)
    return written


GRID_SEEDS, GRID_COLUMNS = 100, 16   # the grid shows the first seeds only, so it stays readable


def _to_images(pixels):
    import torch
    return torch.from_numpy(pixels).movedim(-1, 1).float() / 127.5 - 1      # (N, C, [T,] H, W)


def _save_grid(path, images, rows, row_labels, **kw) -> list[pathlib.Path]:
    from elit.viz import budget_grid
    if images.dim() == 5:
        from elit.video import clip_grid
        return clip_grid(rows, row_labels, path, **kw)
    return [budget_grid(rows, row_labels, path, **kw)]


def _prompt_grid(path, read, items, prompts, max_rows: int = 8) -> list[pathlib.Path]:
    """A text model's grid: one column per prompt (at most GRID_COLUMNS), captioned with it; one row per
    seed (the first max_rows), so a row shares its noise."""
    import torch
    columns = list(range(min(len(prompts), GRID_COLUMNS)))
    seeds = sorted({s for _, s in items})[:max_rows]
    shown = [(k, s) for s in seeds for k in columns]
    images = _to_images(read(shown))
    rows = [torch.stack([images[r * len(columns) + c] for c in range(len(columns))]) for r in range(len(seeds))]
    return _save_grid(path, images, rows, [f"seed {s}" for s in seeds], column_labels=[prompts[k] for k in columns])


def _grid(path, pixels, seeds, labels, model, model_dir, max_rows: int = 8) -> list[pathlib.Path]:
    """Class-conditional: one column per class (the k-th image of each class in row k), headed by the
    class name; at most GRID_COLUMNS classes. Unconditional: rows of 8 seeds. Clips (N, T, H, W, C):
    filmstrips in the PNG, and the same grid animated in a GIF beside it."""
    import torch

    from elit.hub import read_class_names
    images = _to_images(pixels)

    def save(rows, row_labels, **kw):
        return _save_grid(path, images, rows, row_labels, **kw)
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
