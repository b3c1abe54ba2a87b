"""Clips on disk and on screen: per-clip animated GIF (Pillow) and mp4 (PyAV, FFmpeg bundled),
filmstrips, and labelled grids of clips (a PNG of filmstrips, an animated GIF of grids).

Clips are (N, C, T, H, W) floats in [-1, 1], as a video model samples them; on disk they are
uint8 frames (T, H, W, C).
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch
from PIL import Image

from elit._io import atomic_write
from elit.errors import UserError
from elit.viz import render_grid, save_png_atomic, to_pil


def clips_to_uint8(clips: torch.Tensor) -> np.ndarray:
    """(N, C, T, H, W) in [-1, 1] -> (N, T, H, W, C) uint8, clamped (C = 1 or 3)."""
    if clips.dim() != 5 or clips.shape[1] not in (1, 3):
        raise UserError(f"clips must have shape (N, 1 or 3, T, H, W), got {tuple(clips.shape)}")
    x = ((clips.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).numpy()


def filmstrips(clips: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N, C, H, T*W): each clip's frames side by side (for image grids)."""
    N, C, T, H, W = clips.shape
    return clips.permute(0, 1, 3, 2, 4).reshape(N, C, H, T * W)


# Pillow merges a frame equal to the one before into it (adding up their durations), so a still
# stretch of a clip would read back as fewer frames; the comment names the duration of one frame and
# read_frames splits merged frames again by their durations.
_GIF_COMMENT = "elit: {} ms per frame"


def save_gif(frames: np.ndarray, path, fps: float = 4.0) -> pathlib.Path:
    """(T, H, W, C) uint8 -> an endlessly looping animated GIF (read_frames gives back all T frames)."""
    return _write_gif([to_pil(f) for f in frames], path, fps, optimize=False, disposal=2)


def _write_gif(images: list, path, fps: float, **options) -> pathlib.Path:
    ms = int(1000 / fps)
    with atomic_write(path) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0,
                       comment=_GIF_COMMENT.format(ms), **options)
    return pathlib.Path(path)


def save_mp4(frames: np.ndarray, path, fps: int = 4) -> pathlib.Path:
    """(T, H, W, C) uint8 -> H.264 mp4 (yuv420p; odd sizes are padded by one black pixel)."""
    try:
        import av
    except ImportError as e:
        raise UserError("writing mp4 needs PyAV: pip install 'elit-diffusion[video]'") from e
    T, H, W, C = frames.shape
    rgb = np.repeat(frames, 3, axis=-1) if C == 1 else frames
    rgb = np.pad(rgb, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))        # yuv420p needs even sizes
    with atomic_write(path) as f:
        container = av.open(f, mode="w", format="mp4")
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for frame in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    return pathlib.Path(path)


def read_frames(path) -> np.ndarray:
    """Decode a GIF or a video file -> (T, H, W, 3) uint8 (used by tests and the video folder)."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            comment = im.info.get("comment", b"")
            comment = comment.decode("latin-1") if isinstance(comment, bytes) else str(comment)
            prefix, suffix = _GIF_COMMENT.split("{}")
            ms = comment[len(prefix):-len(suffix)] if comment.startswith(prefix) and comment.endswith(suffix) else ""
            frames = []
            for k in range(getattr(im, "n_frames", 1)):
                im.seek(k)
                # a GIF save_gif wrote: a frame Pillow merged with its repeats is repeated again
                repeat = max(1, round(im.info.get("duration", 0) / int(ms))) if ms.isdigit() and int(ms) else 1
                frames += [np.asarray(im.convert("RGB"))] * repeat
        return np.stack(frames)
    import av
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def clip_grid(rows: list[torch.Tensor], row_labels: list[str], path, fps: float = 4.0,
              column_labels: list[str] | None = None) -> list[pathlib.Path]:
    """Rows of clips (each (n, C, T, H, W)): a PNG of filmstrips at `path` and, beside it, an animated
    GIF (same name, .gif) whose frame k shows frame k of every clip in the same layout."""
    path = pathlib.Path(path)
    png = save_png_atomic(render_grid([filmstrips(r) for r in rows], row_labels, column_labels=column_labels), path)
    T = rows[0].shape[2]
    frames = [render_grid([r[:, :, k] for r in rows], row_labels, column_labels=column_labels) for k in range(T)]
    return [png, _write_gif(frames, path.with_suffix(".gif"), fps)]
