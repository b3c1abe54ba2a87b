"""Fashion-MNIST with captions, for the offline text-to-image demo (scripts/t2i_demo.py).

Nothing can be downloaded here, so the "text encoder" is built in code: a word-level vocabulary
(the caption templates and the class names, lower-cased, split on non-letters) and a frozen table
of random word vectors plus random position vectors (seeded, unit variance). Encoding a caption
gives (tokens, D) embeddings and a mask of real tokens, padded to a fixed length; the empty
caption is all padding (zeros, every token masked), which is exactly `TextCondition.null()`, so
the 10% of empty captions in training teach the unconditional pass that CFG needs.

Captions: "a photo of a dress", "an ankle boot", ... (TEMPLATES x class names); PROMPT_TEMPLATE
is the one the demo samples and scores with (prompt accuracy: does the Fashion-MNIST classifier
see the prompted class?).
"""
from __future__ import annotations

import re

import torch

from elit.data.fashion_mnist import CLASS_NAMES, FashionMNIST
from elit.data.seeding import derive_seed
from elit.data.text_latents import write_text_latents

TEMPLATES = ["a photo of a {}", "a {}", "a picture of a {}", "an image of a {}", "a grey {} on black",
             "{}", "a small {}", "a photo of one {}"]
PROMPT_TEMPLATE = TEMPLATES[0]
NAMES = [name.lower().replace("/", " or ") for name in CLASS_NAMES]   # "t-shirt or top", "ankle boot", ...


def words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption.lower())


class WordEncoder:
    """A frozen word-level text encoder: embeds = word_vectors[words] + position_vectors[:n]."""

    def __init__(self, dim: int = 32, tokens: int = 8, seed: int = 0):
        vocab = sorted({w for t in TEMPLATES for w in words(t)} | {w for n in NAMES for w in words(n)})
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.dim, self.tokens = dim, tokens
        g = torch.Generator().manual_seed(seed)
        self.word_vectors = torch.randn(len(vocab), dim, generator=g)
        self.position_vectors = torch.randn(tokens, dim, generator=g)

    @classmethod
    def from_tables(cls, vocab: list[str], word_vectors: torch.Tensor, position_vectors: torch.Tensor) -> "WordEncoder":
        """The encoder its tables describe (a saved one: elit.sampling.prompts reads them from a model folder)."""
        encoder = cls.__new__(cls)
        encoder.vocab = {w: i for i, w in enumerate(vocab)}
        encoder.word_vectors, encoder.position_vectors = word_vectors.float(), position_vectors.float()
        encoder.tokens, encoder.dim = position_vectors.shape
        return encoder

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (embeds (K, tokens, dim) float32, mask (K, tokens) bool)."""
        embeds = torch.zeros(len(captions), self.tokens, self.dim)
        mask = torch.zeros(len(captions), self.tokens, dtype=torch.bool)
        for k, caption in enumerate(captions):
            ids = [self.vocab[w] for w in words(caption)]
            if len(ids) > self.tokens:
                raise ValueError(f"caption {caption!r} has {len(ids)} words; the encoder takes {self.tokens}")
            n = len(ids)
            embeds[k, :n] = self.word_vectors[ids] + self.position_vectors[:n]
            mask[k, :n] = True
        return embeds, mask


def caption_table() -> list[str]:
    """Every caption: PROMPT_TEMPLATE for each class first (row c = class c), the other templates,
    then the empty caption last."""
    table = [PROMPT_TEMPLATE.format(n) for n in NAMES]
    table += [t.format(n) for t in TEMPLATES[1:] for n in NAMES]
    return table + [""]


def build_caption_set(out, split: str = "train", encoder: WordEncoder | None = None, empty_prob: float = 0.1,
                      seed: int = 0, root=None):
    """Write Fashion-MNIST `split` as captioned latents (text-latents format) to folder `out`: the
    "latent" is the padded 1x32x32 image in [-1, 1]; each item gets a template drawn from (seed,
    index), or the empty caption with probability `empty_prob`."""
    encoder = encoder or WordEncoder()
    data = FashionMNIST(split, root)
    table = caption_table()
    latents = torch.stack([data[i][0] for i in range(len(data))]).half()
    labels = data.labels.clone()
    caption = torch.empty(len(data), dtype=torch.long)
    for i in range(len(data)):
        g = torch.Generator().manual_seed(derive_seed(seed, i))
        empty, pick = torch.rand(1, generator=g).item() < empty_prob, int(torch.randint(len(TEMPLATES), (1,), generator=g))
        caption[i] = len(table) - 1 if empty else pick * len(NAMES) + int(labels[i])
    embeds, mask = encoder(table)
    meta = {"source": f"Fashion-MNIST {split}, padded to 32x32, in [-1, 1]", "class_names": CLASS_NAMES,
            "text_encoder": {"kind": "elit.data.fmnist_captions.WordEncoder", "dim": encoder.dim,
                             "tokens": encoder.tokens}, "empty_prob": empty_prob, "seed": seed}
    return write_text_latents(out, latents, caption, embeds, mask, table, labels=labels, meta=meta)
