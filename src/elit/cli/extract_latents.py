"""`elit extract-latents`: encode an image folder once with a diffusers AutoencoderKL (or a video
folder with AutoencoderKLCogVideoX, `--video`) and store the latents as shards (see
elit.data.latents), so training skips the VAE encoder at every step.

    elit extract-latents --vae stabilityai/sd-vae-ft-ema --data /data/imagenet/train --out /data/in256
    elit extract-latents --video --vae THUDM/CogVideoX-2b --vae-subfolder vae --frames 33 \
        --image-size 256 --data /data/kinetics/train --out /data/k700-latents

Resumable: rerunning the same command after an interruption continues at the next unwritten shard.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from elit._lock import exclusive_output
from elit.cli._args import integer, output_folder, resolve_device
from elit.data.image_folder import ImageFolder
from elit.data.latents import LatentShardWriter
from elit.data.seeding import derive_seed
from elit.errors import UserError
from elit.vae import PER_CHANNEL, load_vae, vae_config, vae_kind

HELP = "encode an image folder to VAE latent shards"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="diffusers AutoencoderKL: local folder or hub name")
    parser.add_argument("--vae-subfolder", default=None, help="e.g. 'vae' for a full pipeline repo")
    parser.add_argument("--data", required=True, help="image folder (one sub-folder per class, or flat)")
    parser.add_argument("--out", required=True, help="output folder (new, empty, or an unfinished extraction)")
    parser.add_argument("--image-size", type=integer(8), default=256, help="ADM centre crop size (default 256)")
    parser.add_argument("--batch-size", type=integer(1), default=32, help="images per VAE forward (default 32)")
    parser.add_argument("--shard-size", type=integer(1), default=4096, help="latents per shard file")
    parser.add_argument("--sample", action="store_true",
                        help="store one sample of the latent distribution (seeded per image) instead of "
                             "its mean. DiT draws a fresh sample every step; once frozen to disk a single "
                             "sample adds no augmentation, so the default is the deterministic mean")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed for --sample (image i uses (seed, i))")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="VAE compute dtype")
    parser.add_argument("--save-dtype", choices=["float16", "float32"], default="float16",
                        help="storage dtype (float16 halves the disk size; default)")
    parser.add_argument("--num-workers", type=integer(0), default=0, help="DataLoader workers for image decoding")
    video = parser.add_argument_group("video (--video: a folder of videos, AutoencoderKLCogVideoX)")
    video.add_argument("--video", action="store_true", help="encode clips of a video folder with a 3-D VAE")
    video.add_argument("--frames", type=integer(1), default=9, help="frames per clip (CogVideoX: 4k + 1, e.g. 9 -> 3 "
                       "latent frames)")
    video.add_argument("--stride", type=integer(1), default=1, help="take every stride-th frame")


def _settings(args, data) -> dict:
    """Everything that changes the stored values; a resume must match it exactly. (Batch size,
    device and workers are left out: they do not change which latents are written.)"""
    if args.video:
        listing = "\n".join(f"{p}\t{start}\t{y}" for p, start, y in data.clips)
        extra = {"video": True, "frames": args.frames, "stride": args.stride}
    else:
        listing = "\n".join(f"{p.relative_to(data.root)}\t{y}" for p, y in zip(data.files, data.labels))
        extra = {}
    vae = str(Path(args.vae).resolve()) if Path(args.vae).exists() else args.vae
    return {"vae": vae, "vae_subfolder": args.vae_subfolder, "data": str(data.root.resolve()),
            "image_size": args.image_size, "shard_size": args.shard_size, "sample": args.sample,
            "seed": args.seed if args.sample else None, "dtype": args.dtype, "save_dtype": args.save_dtype,
            "num_files": len(data), "files_sha256": hashlib.sha256(listing.encode()).hexdigest(), **extra}


def run(args: argparse.Namespace) -> int:
    out = output_folder(args.out)
    device = resolve_device(args.device)
    with exclusive_output(out, "elit extract-latents"):
        return _extract(args, device)


def _extract(args: argparse.Namespace, device: torch.device) -> int:
    # the VAE's kind, from its config, before the data are listed or anything is written
    cls_name, kind = vae_kind(vae_config(args.vae, args.vae_subfolder), f"--vae {args.vae!r}")
    if cls_name in PER_CHANNEL:
        pipeline = "WanPipeline" if cls_name == "AutoencoderKLWan" else "QwenImagePipeline"
        raise UserError(f"extract-latents stores (z - shift_factor) x scaling_factor; an {cls_name} normalises per "
                        f"channel (latents_mean / latents_std), which the shards do not record yet: encode its latents "
                        f"as {pipeline} does and write them with elit.data.write_text_latents")
    if kind != ("video" if args.video else "image"):
        fix = "add --video to encode a video folder" if kind == "video" else "--video needs an AutoencoderKLCogVideoX"
        raise UserError(f"--vae {args.vae!r} is an {cls_name}, {'a video' if kind == 'video' else 'an image'} VAE; "
                        f"{fix}")
    if args.video:
        from elit.data.video_folder import VideoFolder
        data = VideoFolder(args.data, frames=args.frames, size=args.image_size, stride=args.stride)
    else:
        data = ImageFolder(args.data, image_size=args.image_size, flip=False)
    settings = _settings(args, data)
    writer = LatentShardWriter(args.out, settings, args.shard_size)  # refuses a foreign --out up front
    start = writer.num_done
    dtype = DTYPES[args.dtype]
    vae = load_vae(args.vae, args.vae_subfolder, dtype, kind="video" if args.video else "image").to(device)
    scale = float(vae.config.scaling_factor)
    shift = vae.config.get("shift_factor", None)  # FLUX/SD3 VAEs have one, SD's does not

    loader = DataLoader(Subset(data, range(start, len(data))), batch_size=args.batch_size,
                        num_workers=args.num_workers)
    index = start
    with torch.no_grad(), tqdm(total=len(data), initial=start, desc="extract-latents", unit="img") as bar:
        for x, y in loader:
            dist = vae.encode(x.to(device, dtype)).latent_dist
            z = dist.mean
            if args.sample:  # image i's noise depends on (seed, i) only: batch size and resume do not matter
                noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(
                    derive_seed(args.seed, i))) for i in range(index, index + len(x))])
                z = z + dist.std * noise.to(device, z.dtype)
            if shift is not None:
                z = z - shift
            z = (z.float() * scale).to(DTYPES[args.save_dtype])
            writer.add(z, y)
            index += len(x)
            bar.update(len(x))
    path = writer.finish({"vae": settings["vae"], "vae_subfolder": args.vae_subfolder, "scaling_factor": scale,
                          "shift_factor": None if shift is None else float(shift), "image_size": args.image_size,
                          "class_names": data.class_names, "num_classes": data.num_classes,
                          "sample": args.sample, "source": settings["data"]})
    print(f"wrote {len(data)} latents to {path.parent} ({len(writer.shards)} shards)")
    return 0
