"""Labelled image grids: one row per budget (or setting), the row's label on the left.

PIL only (no torchvision): images in [-1, 1] are clamped, mapped to uint8 and pasted into one
canvas; small images are upscaled with nearest-neighbour so a 32x32 sample stays readable.
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from elit._io import atomic_write
from elit.errors import UserError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8, clamped (C = 1 or 3)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(image_hwc: np.ndarray) -> Image.Image:
    return Image.fromarray(image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc,
                           mode="L" if image_hwc.shape[-1] == 1 else "RGB")


def save_png_atomic(image: Image.Image, path) -> pathlib.Path:
    """Write a PNG so that no reader ever sees half of it (see elit._io.atomic_write)."""
    with atomic_write(path) as f:
        image.save(f, format="PNG")
    return pathlib.Path(path)


def wrap_text(text: str, width: int, draw, font) -> list[str]:
    """Greedy word wrap of `text` into lines at most `width` pixels wide."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textbbox((0, 0), f"{lines[-1]} {word}", font=font)[2] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def render_grid(rows: list[torch.Tensor], row_labels: list[str], pad: int = 2,
                min_size: int = 64, column_labels: list[str] | None = None) -> Image.Image:
    """One image: row r shows `rows[r]` (n, C, H, W) in [-1, 1] with `row_labels[r]` on its left,
    and `column_labels` above the columns when given: short ones (class names) widen the cells to
    fit, long ones (prompts) are word-wrapped to the cell width.

    Rows may hold different numbers of images (shorter rows are left-aligned). Grayscale stays
    grayscale unless a row is RGB.
    """
    if len(rows) != len(row_labels):
        raise UserError(f"{len(rows)} rows but {len(row_labels)} row labels")
    if not rows:
        raise UserError("budget_grid needs at least one row")
    arrays = [to_uint8(r) for r in rows]
    h, w = arrays[0].shape[1:3]
    if any(a.shape[1:3] != (h, w) for a in arrays):
        raise UserError("all images in a grid must have the same height and width")
    cols = max(len(a) for a in arrays)
    if column_labels is not None and len(column_labels) < cols:
        raise UserError(f"{cols} columns but {len(column_labels)} column labels")
    rgb = any(a.shape[-1] == 3 for a in arrays)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))

    def text_size(s):
        box = probe.textbbox((0, 0), s, font=font)
        return box[2] - box[0], box[3] - box[1]
    headers = list(column_labels or [])[:cols]
    widest = max((text_size(s)[0] for s in headers), default=0) + 2 * pad
    zoom = max(1, -(-min_size // h))  # ceil: upscale tiny images to at least min_size pixels
    if widest <= 2 * w * zoom:        # short headers: widen the cells to fit them on one line
        zoom = max(zoom, -(-widest // w))
    cell_h, cell_w = h * zoom, w * zoom
    heads = [wrap_text(s, cell_w - 2 * pad, probe, font) for s in headers]   # long ones: wrapped
    line_h = max((text_size(line)[1] for lines in heads for line in lines), default=0)
    label_w = max(text_size(s)[0] for s in row_labels) + 2 * pad + 4
    head_h = max((len(lines) for lines in heads), default=0) * (line_h + 1) + 2 * pad + 1 if heads else 0
    mode, white = ("RGB", (255, 255, 255)) if rgb else ("L", 255)
    black = (0, 0, 0) if rgb else 0
    canvas = Image.new(mode, (label_w + cols * (cell_w + pad) + pad, head_h + len(rows) * (cell_h + pad) + pad), white)
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(heads):
        for k, line in enumerate(lines):
            left = label_w + c * (cell_w + pad) + (cell_w - text_size(line)[0]) // 2
            draw.text((left, pad + k * (line_h + 1)), line, font=font, fill=black)
    for r, (arr, label) in enumerate(zip(arrays, row_labels)):
        top = head_h + pad + r * (cell_h + pad)
        box = draw.textbbox((0, 0), label, font=font)
        draw.text((pad, top + (cell_h - (box[3] - box[1])) // 2 - box[1]), label, font=font, fill=black)
        for c, img in enumerate(arr):
            tile = to_pil(img).convert(mode).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (cell_w + pad), top))
    return canvas


def budget_grid(rows: list[torch.Tensor], row_labels: list[str], path, **kwargs) -> pathlib.Path:
    """`render_grid` saved as one PNG at `path` (atomically); returns the path."""
    return save_png_atomic(render_grid(rows, row_labels, **kwargs), path)
