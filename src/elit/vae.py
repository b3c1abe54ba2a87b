"""The VAE around latent-space models: load a diffusers VAE, turn latents into pixels.

Which VAE a folder holds is read from its config.json (`_class_name`), never guessed from the model:
an `AutoencoderKL` or Qwen-Image's `AutoencoderKLQwenImage` decodes image latents (N, C, h, w), an
`AutoencoderKLCogVideoX` (the paper's) or an `AutoencoderKLWan` decodes video latents (N, C, T, h, w).
`decoder_for` is the one place that decides how a model's samples become pixels: it reads the VAE's
config and refuses an image VAE for a video model (or the reverse), or other latent channels, before
any weights are loaded.

Latents are normalised as each VAE's own pipeline normalises them, so decoding undoes exactly that:
- AutoencoderKL / AutoencoderKLCogVideoX: (z - shift_factor) * scaling_factor (`elit extract-latents`;
  SD's and CogVideoX's VAEs have no shift_factor, FLUX/SD3 VAEs have one);
- AutoencoderKLWan, AutoencoderKLQwenImage: (z - latents_mean) / latents_std per channel (WanPipeline,
  QwenImagePipeline; Qwen-Image's VAE decodes one-frame clips, so an image is decoded as a clip of one).
"""
from __future__ import annotations

import pathlib

import torch
from elit.errors import MissingInputError, UserError

VAE_KINDS = {"AutoencoderKL": "image", "AutoencoderKLQwenImage": "image", "AutoencoderKLCogVideoX": "video",
             "AutoencoderKLWan": "video"}
VIDEO_VAES = "AutoencoderKLCogVideoX or AutoencoderKLWan"
IMAGE_VAES = "AutoencoderKL or AutoencoderKLQwenImage"
PER_CHANNEL = ("AutoencoderKLWan", "AutoencoderKLQwenImage")   # normalised by latents_mean / latents_std


def _diffusers():
    try:
        import diffusers
    except ImportError as e:
        raise UserError("VAE models need diffusers: pip install 'elit-diffusion[diffusers]'") from e
    return diffusers


def _where(name: str, subfolder: str | None) -> str:
    return f"{name!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def vae_config(name: str, subfolder: str | None = None) -> dict:
    """The VAE's config.json (a folder, or a hub name from the cache), without loading weights."""
    try:
        config = _diffusers().AutoencoderKL.load_config(name, subfolder=subfolder)
    except (OSError, EnvironmentError) as e:   # missing folder / not on the hub / offline
        raise MissingInputError(f"cannot read the VAE config of {_where(name, subfolder)}: {e}") from e
    return dict(config)


def vae_kind(config: dict, name: str = "the VAE") -> tuple[str, str]:
    """(class name, "image" or "video") of a VAE config; an unknown class is refused."""
    cls_name = config.get("_class_name")
    if cls_name not in VAE_KINDS:
        raise UserError(f"{name} holds a {cls_name or 'model without _class_name'}; elit decodes with "
                        f"{', '.join(VAE_KINDS)}")
    return cls_name, VAE_KINDS[cls_name]


def latent_channels(config: dict) -> int:
    return int(config["z_dim"] if config.get("_class_name") in PER_CHANNEL else config["latent_channels"])


def load_vae(name: str, subfolder: str | None = None, dtype: torch.dtype = torch.float32, device="cpu",
             kind: str | None = None):
    """The diffusers VAE of a folder or hub name (offline: only from a folder or the cache), its
    class read from the folder's config; `kind` ("image" / "video") refuses the other kind."""
    cls_name, found = vae_kind(vae_config(name, subfolder), f"VAE {_where(name, subfolder)}")
    if kind is not None and found != kind:
        need = f"an {IMAGE_VAES}" if kind == "image" else f"an {VIDEO_VAES}"
        raise UserError(f"VAE {_where(name, subfolder)} is an {cls_name} ({found} latents); {kind} latents need {need}")
    try:
        vae = getattr(_diffusers(), cls_name).from_pretrained(name, subfolder=subfolder, torch_dtype=dtype)
    except (OSError, EnvironmentError) as e:
        raise MissingInputError(f"cannot load {cls_name} {_where(name, subfolder)}: {e}") from e
    return vae.to(device).eval().requires_grad_(False)


def check_vae(config, vae: str, subfolder: str | None = None, what: str = "this model") -> None:
    """Refuse, from the VAE's config alone, a VAE that cannot decode the samples of a model with
    `config` (an elit ModelConfig): the wrong kind (image vs video) or other latent channels."""
    meta = vae_config(vae, subfolder)
    cls_name, kind = vae_kind(meta, f"--vae {_where(vae, subfolder)}")
    video = len(config.backbone.input_shape()) == 4
    if kind != ("video" if video else "image"):
        samples, need = ("video latents (C, T, H, W)", f"an {VIDEO_VAES}") if video else \
            ("image latents (C, H, W)", f"an {IMAGE_VAES}")
        raise UserError(f"{what} samples {samples} but --vae {_where(vae, subfolder)} is an {cls_name}, "
                        f"{'a video' if kind == 'video' else 'an image'} VAE; pass {need}")
    channels, own = latent_channels(meta), config.backbone.in_channels
    if channels != own:
        raise UserError(f"{what} samples {own}-channel latents but the {cls_name} {_where(vae, subfolder)} has "
                        f"{channels}; pass the VAE its training latents came from")


def vae_beside(vae: str | None, subfolder: str | None, *folders) -> tuple[str | None, str | None]:
    """The VAE to decode with: `vae` (and `subfolder`) as given, else the `vae/` of the first of `folders`
    that has one (a diffusers pipeline folder given with --pipeline, a model folder that carries its VAE)."""
    if vae:
        return vae, subfolder
    for folder in folders:
        if folder and (pathlib.Path(folder) / "vae" / "config.json").is_file():
            return str(folder), "vae"
    return None, None


def decoder_for(config, vae: str | None, subfolder: str | None = None, device="cpu", what: str = "this model"):
    """How a model's samples become pixels: None for a pixel-space model (1 or 3 channels), a
    LatentDecoder for a latent model given its VAE (checked against the model first, check_vae). A
    latent model without a VAE is refused here, before any work (`elit sample`, `elit serve`)."""
    if vae:
        check_vae(config, vae, subfolder, what)
        return LatentDecoder(load_vae(vae, subfolder, device=device))
    channels = config.backbone.in_channels
    if channels not in (1, 3):
        video = len(config.backbone.input_shape()) == 4
        kind = f"video VAE ({VIDEO_VAES})" if video else f"image VAE ({IMAGE_VAES})"
        raise UserError(f"{what} samples {channels}-channel latents; pass --vae with the {kind} its training latents "
                        f"came from to decode them to {'videos' if video else 'images'}")
    return None


class LatentDecoder:
    """Callable: model-space latents (N, C, h, w), or (N, C, T, h, w) for a video VAE -> pixels
    (N, 3, H, W) / (N, 3, T', H, W) in [-1, 1], float32 on the CPU."""

    def __init__(self, vae, scaling_factor: float | None = None, shift_factor: float | None = None):
        self.vae = vae
        config = vae.config
        self.kind = VAE_KINDS.get(type(vae).__name__, "image")
        self.latent_channels = latent_channels({"_class_name": type(vae).__name__, **config})
        self.one_frame = type(vae).__name__ == "AutoencoderKLQwenImage"    # its images are clips of one frame
        if type(vae).__name__ in PER_CHANNEL:   # per channel, as WanPipeline and QwenImagePipeline
            self.shift = torch.tensor(config.latents_mean, dtype=torch.float32)
            self.scale = 1 / torch.tensor(config.latents_std, dtype=torch.float32)
        else:
            scale = scaling_factor if scaling_factor is not None else config.scaling_factor
            shift = shift_factor if shift_factor is not None else config.get("shift_factor", None)
            self.scale, self.shift = torch.tensor(float(scale)), torch.tensor(float(shift or 0.0))

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.shape[1] != self.latent_channels:
            raise UserError(f"the VAE expects {self.latent_channels}-channel latents, the model makes "
                             f"{latents.shape[1]}")
        if (latents.dim() == 5) != (self.kind == "video"):
            raise UserError(f"a {type(self.vae).__name__} decodes {self.kind} latents, got shape {tuple(latents.shape)}")
        p = next(self.vae.parameters())
        per_channel = (1, -1) + (1,) * (latents.dim() - 2)
        scale, shift = (v.to(p.device, p.dtype).reshape(per_channel if v.dim() else ()) for v in (self.scale, self.shift))
        return self._decode(self.vae, latents.to(p.device, p.dtype) / scale + shift).float().cpu()

    def _decode(self, vae, z):
        return vae.decode(z[:, :, None]).sample[:, :, 0] if self.one_frame else vae.decode(z).sample

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The decoded shape of one sample of latent shape (C, [T,] h, w), found on a weightless
        copy (a video VAE's frame count is its own business: CogVideoX maps 2 latent frames to 8)."""
        with torch.device("meta"), torch.no_grad():
            copy = type(self.vae).from_config(self.vae.config)
            return tuple(self._decode(copy, torch.empty(1, *shape)).shape[1:])
