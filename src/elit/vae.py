"""The VAE around latent-space models: load a diffusers AutoencoderKL, turn latents into pixels.

Latents are stored as (z - shift_factor) * scaling_factor (`elit extract-latents`), so the decoder
undoes exactly that: vae.decode(x / scaling_factor + shift_factor). Both factors come from the
VAE's config unless given (SD's VAE has no shift_factor; FLUX/SD3 VAEs have one).
"""
from __future__ import annotations

import torch
from elit.errors import MissingInputError, UserError


VAE_CLASSES = {"image": "AutoencoderKL", "video": "AutoencoderKLCogVideoX"}   # the paper's video VAE


def load_vae(name: str, subfolder: str | None = None, dtype: torch.dtype = torch.float32, device="cpu",
             kind: str = "image"):
    """A diffusers VAE from a folder or hub name (offline: only from a folder or the cache): an
    AutoencoderKL for images, an AutoencoderKLCogVideoX (3-D, 4x temporal compression) for video."""
    try:
        import diffusers
    except ImportError as e:
        raise UserError("VAE models need diffusers: pip install 'elit-diffusion[diffusers]'") from e
    cls_name = VAE_CLASSES[kind]
    try:
        vae = getattr(diffusers, cls_name).from_pretrained(name, subfolder=subfolder, torch_dtype=dtype)
    except (OSError, EnvironmentError) as e:  # missing folder / not on the hub / offline
        raise MissingInputError(f"cannot load {cls_name} {name!r}"
                                f"{f' (subfolder {subfolder!r})' if subfolder else ''}: {e}") from e
    return vae.to(device).eval().requires_grad_(False)


def decoder_for(config, vae: str | None, subfolder: str | None = None, device="cpu", what: str = "this model"):
    """How a model's samples become pixels: None for a pixel-space model (1 or 3 channels), a
    LatentDecoder for a latent model given its VAE folder. A latent model without a VAE is refused
    here, before any work (`elit sample`, `elit serve`)."""
    if vae:
        return LatentDecoder(load_vae(vae, subfolder, device=device))
    channels = config.backbone.in_channels
    if channels not in (1, 3):
        raise UserError(f"{what} samples {channels}-channel latents; pass --vae with the AutoencoderKL its "
                        f"training latents came from to decode them to images")
    return None


class LatentDecoder:
    """Callable: model-space latents (N, C, h, w) -> images (N, 3, H, W) in [-1, 1], float32 on the CPU."""

    def __init__(self, vae, scaling_factor: float | None = None, shift_factor: float | None = None):
        self.vae = vae
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)
        shift = shift_factor if shift_factor is not None else vae.config.get("shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0
        self.latent_channels = int(vae.config.latent_channels)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.shape[1] != self.latent_channels:
            raise UserError(f"the VAE expects {self.latent_channels}-channel latents, the model makes "
                             f"{latents.shape[1]}")
        p = next(self.vae.parameters())
        z = latents.to(p.device, p.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.float().cpu()
