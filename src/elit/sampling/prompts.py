"""Prompts -> TextCondition: the text encoders behind `elit sample --prompt` and `elit serve`.

A text encoder has `check(prompt)` (a UserError naming what is wrong with one prompt), `encode(prompts)`
(one TextCondition row per prompt, all padded to one length with the padding masked out, as the
diffusers pipelines pad a batch of prompts) and `describe()` (what identifies it in a sample folder's
record). Two kinds:

- `WordTableEncoder`: a word-level table (the offline demo's `elit.data.fmnist_captions.WordEncoder`)
  that an elit model folder carries in `text_encoder/` (config.json: the vocabulary and length;
  model.safetensors: the word and position vectors), read back as data, never as code;
- `PipelineEncoder`: the text encoder(s) of a local diffusers pipeline folder (QwenImagePipeline,
  StableDiffusion3Pipeline, FluxPipeline, WanPipeline), loaded on first use without the pipeline's
  transformer and VAE, offline, and run through the pipeline's own `encode_prompt`.

`load_text_encoder` picks one: a pipeline folder when given, else the model folder's table.
"""
from __future__ import annotations

import json
import pathlib
import threading

import torch

from elit.errors import MissingInputError, UserError
from elit.model.condition import TextCondition

TEXT_ENCODER = "text_encoder"            # the subfolder of an elit model folder that carries its encoder
WORD_TABLE_FORMAT = "elit-word-table/1"
# pipeline class -> the elit backbone its transformer is (a pipeline's encoder fits only its own model)
PIPELINES = {"QwenImagePipeline": "qwenimage", "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux",
             "WanPipeline": "wan"}


class WordTableEncoder:
    """A word-level table: embeds = word_vectors[words] + position_vectors[:n], padded to `tokens`."""

    def __init__(self, words, sha256: str | None = None):
        self.words, self.sha256 = words, sha256      # an elit.data.fmnist_captions.WordEncoder

    @property
    def tokens(self) -> int:
        return self.words.tokens

    def save(self, folder) -> pathlib.Path:
        """Write the table to `folder` (an elit model folder's `text_encoder/`)."""
        from safetensors.torch import save_file

        from elit._io import write_json
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = sorted(self.words.vocab, key=self.words.vocab.get)
        save_file({"word_vectors": self.words.word_vectors.contiguous(),
                   "position_vectors": self.words.position_vectors.contiguous()}, str(folder / "model.safetensors"))
        write_json(folder / "config.json", {"format": WORD_TABLE_FORMAT, "tokens": self.words.tokens,
                                            "dim": self.words.dim, "vocab": vocab})
        return folder

    @classmethod
    def load(cls, folder) -> "WordTableEncoder":
        from safetensors.torch import load_file

        from elit._io import file_sha256, read_json
        from elit.data.fmnist_captions import WordEncoder
        folder = pathlib.Path(folder)
        config = read_json(folder / "config.json", "text encoder config")
        if not isinstance(config, dict) or config.get("format") != WORD_TABLE_FORMAT:
            raise UserError(f"{folder} is not an elit word table (config.json format {WORD_TABLE_FORMAT!r}); give "
                            f"--pipeline DIR, the diffusers pipeline folder whose text encoder the model was trained with")
        try:
            tables = load_file(str(folder / "model.safetensors"))
            words = WordEncoder.from_tables(config["vocab"], tables["word_vectors"], tables["position_vectors"])
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read the word table in {folder}: {e}") from None
        return cls(words, file_sha256(folder / "model.safetensors"))

    def check(self, prompt: str) -> None:
        from elit.data.fmnist_captions import words
        found = words(prompt)
        unknown = sorted({w for w in found if w not in self.words.vocab})
        if unknown:
            raise UserError(f"{prompt!r} has words this model's text encoder does not know ({', '.join(unknown)}); "
                            f"it knows: {', '.join(sorted(self.words.vocab))}")
        if len(found) > self.tokens:
            raise UserError(f"{prompt!r} has {len(found)} words; this model's text encoder takes at most {self.tokens}")

    def encode(self, prompts: list[str]) -> TextCondition:
        for p in prompts:
            self.check(p)
        embeds, mask = self.words(list(prompts))
        return TextCondition(embeds, mask)

    def describe(self) -> dict:
        return {"kind": "word-table", "tokens": self.tokens, "sha256": self.sha256}


class PipelineEncoder:
    """The text encoder(s) of a diffusers pipeline folder, through the pipeline's `encode_prompt`."""

    def __init__(self, folder, device="cpu", dtype: torch.dtype = torch.float32):
        self.folder, self.device, self.dtype = pathlib.Path(folder), torch.device(device), dtype
        index = self.folder / "model_index.json"
        if not index.is_file():
            raise MissingInputError(f"--pipeline {folder} is not a diffusers pipeline folder (no model_index.json)")
        try:
            self.class_name = json.loads(index.read_text()).get("_class_name")
        except (ValueError, AttributeError):
            raise UserError(f"{index} is not a pipeline's model_index.json") from None
        if self.class_name not in PIPELINES:
            raise UserError(f"--pipeline {folder} holds a {self.class_name}; elit encodes prompts with "
                            f"{', '.join(PIPELINES)}")
        self._pipe = None
        self._lock = threading.Lock()     # a server encodes from several request threads

    def check_model(self, config, what: str = "this model") -> None:
        """Refuse, from model_index.json alone, a pipeline whose text encoder is another model family's."""
        name = config.backbone.name
        if PIPELINES[self.class_name] != name:
            raise UserError(f"--pipeline {self.folder} is a {self.class_name}, but {what} is a {name} transformer; "
                            f"give the pipeline folder of its own family")

    def check(self, prompt: str) -> None:
        """Nothing to refuse: the pipeline's tokenizer truncates a long prompt as diffusers does."""

    def _pipeline(self):
        if self._pipe is None:
            import diffusers
            skip = {"transformer": None, "vae": None}
            if self.class_name == "WanPipeline":
                skip["transformer_2"] = None       # Wan 2.2's second transformer
            try:
                pipe = getattr(diffusers, self.class_name).from_pretrained(
                    str(self.folder), torch_dtype=self.dtype, local_files_only=True, **skip)
            except (OSError, EnvironmentError, ValueError) as e:
                raise MissingInputError(f"cannot load the text encoder of --pipeline {self.folder}: {e}") from None
            self._pipe = pipe.to(self.device)
        return self._pipe

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextCondition:
        prompts = list(prompts)
        with self._lock:
            pipe = self._pipeline()
            if self.class_name == "QwenImagePipeline":
                embeds, mask = pipe.encode_prompt(prompts, device=self.device)
                return TextCondition(embeds, mask)
            if self.class_name == "StableDiffusion3Pipeline":
                embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=self.device,
                                                          do_classifier_free_guidance=False)
                return TextCondition(embeds, None, pooled)
            if self.class_name == "FluxPipeline":
                embeds, pooled, _ = pipe.encode_prompt(prompts, None, device=self.device)
                return TextCondition(embeds, None, pooled)
            # WanPipeline pads to max_sequence_length (512 in its __call__) with zeros: no mask
            embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=512,
                                           device=self.device)
            return TextCondition(embeds)

    def describe(self) -> dict:
        return {"kind": self.class_name, "folder": str(self.folder.resolve())}


def carries_text_encoder(model_dir) -> bool:
    return (pathlib.Path(model_dir) / TEXT_ENCODER / "config.json").is_file()


def load_text_encoder(config, model_dir, pipeline=None, device="cpu", dtype: torch.dtype = torch.float32,
                      what: str = "this model"):
    """The text encoder of a text-to-image model: `pipeline`'s (a diffusers pipeline folder) when given,
    else the one its folder carries (`text_encoder/`). Refused when there is neither."""
    if pipeline:
        encoder = PipelineEncoder(pipeline, device, dtype)
        encoder.check_model(config, what)
        return encoder
    if carries_text_encoder(model_dir):
        return WordTableEncoder.load(pathlib.Path(model_dir) / TEXT_ENCODER)
    raise UserError(f"{what} is text-to-image but {model_dir} carries no {TEXT_ENCODER}/; give --pipeline DIR, the "
                    f"diffusers pipeline folder (QwenImagePipeline, ...) holding its text encoder")


def check_prompt(prompt, what: str = "prompt") -> str:
    """A prompt is a non-empty string (a negative prompt may be empty: that is the usual unconditional input)."""
    if not isinstance(prompt, str):
        raise UserError(f"a {what} must be a string, got {type(prompt).__name__}")
    if what == "prompt" and not prompt.strip():
        raise UserError("a prompt must not be empty: give the text the image should show")
    return prompt


def encode_prompts(model, encoder, prompts: list[str], negative: str | None = None):
    """(conditions (one row per prompt), negative condition (one row) or None), encoded in one call so that
    they share one text length, and checked against the model (its text features) before any sampling."""
    rows = list(prompts) + ([negative] if negative is not None else [])
    for p in prompts:
        encoder.check(check_prompt(p))
    if negative is not None:
        encoder.check(check_prompt(negative, "negative prompt"))
    both = encoder.encode(rows)
    device = next(iter(model.parameters())).device
    model.backbone.check_condition(both, len(both), device)      # e.g. a text encoder of another width
    return both[:len(prompts)], (both[len(prompts):] if negative is not None else None)
