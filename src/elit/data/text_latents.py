"""Captioned latents for text-to-image training and fine-tuning (`data: {name: text-latents, root: DIR}`).

    DIR/index.json             format, counts, shapes, what the latents are (written last)
    DIR/latents.safetensors    latents (N, C, H, W) float16/32, caption (N,) int64 row of the caption
                               table, labels (N,) int64 (optional, e.g. a prompted class for evaluation)
    DIR/captions.safetensors   embeds (K, L, D), mask (K, L) uint8, pooled (K, P) (optional):
                               the text encoder's output for each distinct caption
    DIR/captions.json          the K caption strings

Text is stored encoded: elit never runs a text encoder. Encode your captions once with the text
encoder your transformer was trained with (e.g. `QwenImagePipeline.encode_prompt`, padded to one
length with the mask marking real tokens; SD3: `encode_prompt`'s embeddings and pooled vector), as
the latents are encoded once with the VAE. Items sharing a caption share a row of the table, so a
templated data set (scripts/t2i_demo.py) stays small. An item is (latent float32, {"embeds",
"mask" bool[, "pooled"]}), which DataLoader batches into a dict of tensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from elit._io import read_json, replace_dir, temp_dir_beside
from elit.errors import MissingInputError, UserError

FORMAT, VERSION = "elit-text-latents", 1


def write_text_latents(root, latents: torch.Tensor, caption: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor,
                       captions: list[str], pooled: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                       meta: dict | None = None) -> Path:
    """Write a captioned latent set to folder `root` (replaced atomically)."""
    N, K = latents.shape[0], embeds.shape[0]
    if caption.shape != (N,) or int(caption.min()) < 0 or int(caption.max()) >= K:
        raise UserError(f"caption must hold one row index in 0..{K - 1} per latent ({N})")
    if mask.shape != embeds.shape[:2] or len(captions) != K or (pooled is not None and pooled.shape[0] != K):
        raise UserError("embeds, mask, pooled and the caption strings must have one row per caption")
    tmp = temp_dir_beside(root)
    items = {"latents": latents.contiguous(), "caption": caption.long().contiguous()}
    if labels is not None:
        items["labels"] = labels.long().contiguous()
    table = {"embeds": embeds.contiguous(), "mask": mask.to(torch.uint8).contiguous()}
    if pooled is not None:
        table["pooled"] = pooled.contiguous()
    save_file(items, str(tmp / "latents.safetensors"))
    save_file(table, str(tmp / "captions.safetensors"))
    (tmp / "captions.json").write_text(json.dumps(captions, indent=0) + "\n")
    index = {"format": FORMAT, "version": VERSION, "num_items": N, "num_captions": K,
             "latent_shape": list(latents.shape[1:]), "text_tokens": int(embeds.shape[1]),
             "text_dim": int(embeds.shape[2]), "pooled_dim": None if pooled is None else int(pooled.shape[1]),
             **(meta or {})}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return replace_dir(tmp, root)


class TextLatentDataset(Dataset):
    """Items (latent float32 (C, H, W), {"embeds" (L, D), "mask" (L,) bool[, "pooled" (P,)]})."""
    num_classes = 0           # the condition is text

    def __init__(self, root):
        self.root = Path(root)
        index = read_json(self.root / "index.json", "text-latents index")
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            raise UserError(f"{self.root / 'index.json'} is not an {FORMAT} v{VERSION} index")
        for name in ("latents.safetensors", "captions.safetensors"):
            if not (self.root / name).is_file():
                raise MissingInputError(f"{self.root / name} is missing")
        self.index = index
        self.image_shape = tuple(index["latent_shape"])
        table = load_file(str(self.root / "captions.safetensors"))
        self.embeds, self.mask = table["embeds"], table["mask"].bool()
        self.num_captions = len(self.embeds)
        self.pooled = table.get("pooled")
        self._file = None
        with safe_open(str(self.root / "latents.safetensors"), framework="pt") as f:
            self.caption = f.get_tensor("caption")
            self.labels = f.get_tensor("labels") if "labels" in f.keys() else None

    def __getstate__(self):  # safetensors handles cannot be pickled to DataLoader workers
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return len(self.caption)

    def captions(self) -> list[str]:
        return json.loads((self.root / "captions.json").read_text())

    def condition(self, k: int) -> dict:
        out = {"embeds": self.embeds[k].float(), "mask": self.mask[k]}
        if self.pooled is not None:
            out["pooled"] = self.pooled[k].float()
        return out

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        if self._file is None:
            self._file = safe_open(str(self.root / "latents.safetensors"), framework="pt")
        return self._file.get_slice("latents")[i].float(), self.condition(int(self.caption[i]))
