"""Measuring video models.

- Per frame: every metric of `elit.eval.metrics` (FID, FD-FMNIST, ...) on the frames of the clips,
  against the frames of reference clips.
- Temporal, offline: `fd_fmnist_clip`, the Frechet distance of clip features made of the T frames'
  Fashion-MNIST classifier features concatenated in time order (a small-domain stand-in for FVD:
  it sees identity and motion only as far as per-frame features change over the clip, NOT FVD);
  `class_consistency`, the share of clips whose frames all get the same predicted class; and
  `label_accuracy`, the share of frames whose predicted class is the clip's conditioning label.
- FVD: `fvd`, the Frechet distance of I3D features (the TorchScript I3D port that StyleGAN-V's FVD
  loads, `i3d_torchscript.pt`: it cannot be downloaded here, so pass its path). Frames are turned to
  RGB, resized to 224x224 (bilinear) and scaled to [-1, 1]; the detector is called with its own
  rescale/resize off and return_features on (400-d).
Reference clips: "moving-fmnist-test" / "moving-fmnist-train" (synthesised with the model's frames
and size), or an .npz whose arr_0 holds uint8 clips (N, T, H, W[, C]).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from elit.errors import MissingInputError, UserError
from elit.eval.metrics.stats import FeatureStats, RunningStats, frechet_distance

TEMPORAL_METRICS = ("fd_fmnist_clip", "class_consistency", "label_accuracy", "fvd")
MOVING_SOURCES = ("moving-fmnist-test", "moving-fmnist-train")


def is_video_model(model) -> bool:
    return len(model.sample_shape()) == 4


def clips_uint8(clips: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) floats in [-1, 1] -> uint8, same layout."""
    return ((clips.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def frames_of(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, T, H, W) -> (N*T, C, H, W), clip-major (frames of clip 0 first)."""
    N, C, T, H, W = clips.shape
    return clips.permute(0, 2, 1, 3, 4).reshape(N * T, C, H, W)


def reference_clips(ref, shape: tuple[int, ...], num: int = 2000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 clips (N, C, T, H, W), labels or None) of a reference: a moving-fmnist split (made with
    the model's clip shape `shape` = (C, T, H, W)) or an .npz with arr_0 (N, T, H, W[, C]) [arr_1 labels]."""
    C, T, H, W = shape
    if isinstance(ref, str) and ref in MOVING_SOURCES:
        from elit.data.moving_fmnist import MovingFashionMNIST
        if C != 1 or H != W:
            raise UserError(f"{ref} has 1-channel square clips; this model makes {shape}")
        data = MovingFashionMNIST(split=ref.rsplit("-", 1)[1], frames=T, size=H, length=num, seed=1)
        items = [data[i] for i in range(num)]
        clips = torch.stack([x for x, _ in items])
        return clips_uint8(clips), torch.stack([y for _, y in items])
    if isinstance(ref, str) and ref.endswith(".npz"):
        try:
            with np.load(ref) as z:
                arr, labels = z["arr_0"], (z["arr_1"] if "arr_1" in z.files else None)
        except FileNotFoundError:
            raise MissingInputError(f"reference clips {ref} not found") from None
        except (KeyError, ValueError, OSError) as e:
            raise UserError(f"{ref} is not an .npz of clips with arr_0 (N, T, H, W[, C]) uint8: {e}") from None
        if arr.ndim == 4:
            arr = arr[..., None]
        if arr.ndim != 5 or arr.dtype != np.uint8 or arr.shape[1:4] != (T, H, W) or arr.shape[-1] != C:
            raise UserError(f"{ref}: arr_0 must be uint8 clips (N, {T}, {H}, {W}, {C}) for this model, got "
                            f"{arr.dtype} {arr.shape}")
        clips = torch.from_numpy(arr[:num]).permute(0, 4, 1, 2, 3).contiguous()
        return clips, None if labels is None else torch.from_numpy(labels[:num]).long()
    raise UserError(f"a video reference is {' or '.join(MOVING_SOURCES)} or an .npz of clips, got {ref!r}")


class ClipStatistics:
    """Accumulates the temporal statistics of uint8 clips batch by batch: the Fashion-MNIST ones
    with a classifier, FVD with an I3D (either may be None: FVD alone measures any RGB video, e.g.
    a video VAE's decoded clips)."""

    def __init__(self, classifier, frames: int, i3d=None):
        self.classifier, self.i3d = classifier, i3d
        self.clip_fd = RunningStats(classifier.dim * frames) if classifier is not None else None
        self.fvd = RunningStats(i3d.dim) if i3d is not None else None
        self.clips = self.consistent = self.frames = self.agree = 0

    def update(self, clips: torch.Tensor, labels: torch.Tensor | None) -> None:
        N, C, T = clips.shape[:3]
        self.clips += N
        if self.classifier is not None:
            frames = frames_of(clips)
            self.clip_fd.update(self.classifier(frames).reshape(N, -1))       # time-ordered concatenation
            predicted = self.classifier.logits(frames).argmax(-1).reshape(N, T).cpu()
            self.consistent += int((predicted == predicted[:, :1]).all(1).sum())
            if labels is not None:
                self.frames += N * T
                self.agree += int((predicted == labels.reshape(N, 1).cpu()).sum())
        if self.fvd is not None:
            self.fvd.update(self.i3d(clips))

    def stats(self) -> dict:
        out = {}
        if self.clip_fd is not None:
            out["clip"] = FeatureStats.from_running(self.clip_fd, "fmnist-clip", "clip features")
        if self.fvd is not None:
            out["fvd"] = FeatureStats.from_running(self.fvd, "i3d", "I3D features")
        return out

    def results(self, reference: dict, fd_method: str = "sqrtm") -> dict:
        mine, ref, res = self.stats(), reference, {}
        if "clip" in mine:
            res["fd_fmnist_clip"] = frechet_distance(mine["clip"].mu, mine["clip"].sigma, ref["clip"].mu,
                                                     ref["clip"].sigma, method=fd_method)
            res["class_consistency"] = self.consistent / max(1, self.clips)
        if self.frames:
            res["label_accuracy"] = self.agree / self.frames
        if "fvd" in mine:
            res["fvd"] = frechet_distance(mine["fvd"].mu, mine["fvd"].sigma, ref["fvd"].mu, ref["fvd"].sigma,
                                          method=fd_method)
        return res


class I3DFeatures:
    """FVD's feature network: a TorchScript I3D at a user-supplied path (e.g. StyleGAN-V's
    i3d_torchscript.pt). uint8 clips (N, C, T, H, W) -> (N, 400) float64 features."""

    def __init__(self, path, device="cpu", batch_size: int = 8):
        import pathlib
        if path is None or not pathlib.Path(path).is_file():
            raise MissingInputError(f"FVD needs the I3D TorchScript weights (i3d_torchscript.pt), not found at "
                                    f"{path!r}; pass --i3d-weights PATH (they cannot be downloaded here)")
        self.net = torch.jit.load(str(path), map_location=device).eval()
        self.device, self.batch_size, self.dim = torch.device(device), batch_size, 400

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(clips), self.batch_size):
            x = clips[i:i + self.batch_size].to(self.device).float()
            N, C, T, H, W = x.shape
            x = x.expand(N, 3, T, H, W) if C == 1 else x
            x = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(N * T, 3, H, W), size=(224, 224), mode="bilinear",
                              align_corners=False)
            x = x.reshape(N, T, 3, 224, 224).permute(0, 2, 1, 3, 4) / 127.5 - 1
            feats = self.net(x, rescale=False, resize=False, return_features=True)
            if feats.shape[-1] != self.dim:
                raise UserError(f"the I3D network returned {feats.shape[-1]}-d features, FVD uses {self.dim}-d "
                                f"(is it i3d_torchscript.pt?)")
            out.append(feats.double().cpu())
        return torch.cat(out).numpy()
