"""Prompts from the shell: the text encoders (a model folder's word table, a diffusers pipeline folder's
encoder), `elit sample --prompt` (files by prompt and seed, equal to `elit.sample`, a captioned grid, the
one-run folder rules with the prompts in the record) and its refusals. The model is a tiny Qwen-Image
ELIT (16x16x1, 3 blocks, 4 windows of 4x4 tokens, budgets 2..16) carrying the demo's word encoder."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers", reason="pip install 'elit-diffusion[diffusers]'")

import elit  # noqa: E402
from elit.cli import main  # noqa: E402
from elit.data.fmnist_captions import WordEncoder  # noqa: E402
from elit.errors import UserError  # noqa: E402
from elit.sampling.prompts import TEXT_ENCODER, PipelineEncoder, WordTableEncoder, load_text_encoder  # noqa: E402
from elit.viz import to_uint8  # noqa: E402

PROMPTS = ["a photo of a dress", "an ankle boot"]
RUN = ["--seeds", "2-4", "--steps", "2", "--budget", "4", "--guidance", "ccfg", "--scale", "1", "--weak-budget", "2",
       "--batch-size", "2", "--device", "cpu"]


def tiny_text_model():
    from elit.model import ELITModel, ModelConfig
    from elit.model.backbones import QwenImageArgs
    config = ModelConfig(backbone=QwenImageArgs(input_size=16, in_channels=1, out_channels=1, hidden_size=32, depth=3,
                                                num_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
                                                text_tokens=8))
    config = config.override(elit=True, head_depth=1, tail_depth=1, window=[4, 4], min_budget=2, latent_pos="tokens")
    torch.manual_seed(0)
    model = ELITModel(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():   # random weights: a fresh model's zero output layers would draw flat images
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def save_text_model(path):
    """The tiny text model in `path`, carrying the demo's word encoder in text_encoder/ (as the demo's does)."""
    elit.save_pretrained(tiny_text_model(), path)
    WordTableEncoder(WordEncoder()).save(path / TEXT_ENCODER)
    return path


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return save_text_model(tmp_path_factory.mktemp("t2i") / "tiny-t2i")


def test_the_word_table_round_trips_through_the_model_folder(text_dir):
    model = elit.load_pretrained(text_dir)
    encoder = load_text_encoder(model.config, text_dir)
    embeds, mask = WordEncoder()(PROMPTS + [""])
    cond = encoder.encode(PROMPTS + [""])
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.mask, mask)
    # the empty prompt is the dropped caption, so the default negative equals the model's null condition
    null = model.null_condition(cond[:1])
    assert torch.equal(cond[2].embeds, null.embeds) and torch.equal(cond[2].mask, null.mask)
    assert encoder.describe()["kind"] == "word-table" and len(encoder.describe()["sha256"]) == 64
    with pytest.raises(UserError, match=r"does not know \(cat\)"):
        encoder.encode(["a photo of a cat"])
    with pytest.raises(UserError, match="has 10 words; this model.s text encoder takes at most 8"):
        encoder.encode(["a photo of a dress " * 2])
    with pytest.raises(UserError, match="carries no text_encoder"):
        load_text_encoder(model.config, text_dir.parent)


def test_elit_sample_draws_each_prompt_at_every_seed(text_dir, tmp_path, capsys):
    out = tmp_path / "s"
    (tmp_path / "prompts.txt").write_text(f"{PROMPTS[1]}\n\n")
    assert main(["sample", "--model", str(text_dir), "--prompt", PROMPTS[0], "--prompts", str(tmp_path / "prompts.txt"),
                 "--out", str(out), "--grid", "--npz", *RUN]) == 0
    names = sorted(p.name for p in out.glob("p*.png"))
    assert names == [f"p{k:03d}-s{s:06d}.png" for k in (0, 1) for s in (2, 3, 4)]
    model = elit.load_pretrained(text_dir)
    cond = WordTableEncoder.load(text_dir / TEXT_ENCODER).encode(PROMPTS + [""])    # the prompts, then the negative
    for k in (0, 1):   # each prompt's images are elit.sample's, from the same per-seed noise
        want = to_uint8(elit.sample(model, [2, 3, 4], labels=cond[k], negative=cond[2], steps=2, budget=4,
                                    guidance="ccfg", scale=1, weak_budget=2))
        got = np.stack([np.asarray(Image.open(out / f"p{k:03d}-s{s:06d}.png"))[..., None] for s in (2, 3, 4)])
        assert np.array_equal(got, want)
    grid = Image.open(out / "grid.png")
    assert grid.height > 3 * 64 and grid.width > 2 * 64          # rows: seeds, columns: the two prompts
    assert np.load(out / "samples_6x16x16x1.npz")["arr_0"].shape == (6, 16, 16, 1)
    record = json.loads((out / "sampling.json").read_text())
    assert record["settings"]["prompts"] == PROMPTS and record["settings"]["negative_prompt"] == ""
    assert list(record["images"]) == [f"p{k:03d}-s{s:06d}" for k in (0, 1) for s in (2, 3, 4)]
    capsys.readouterr()
    # the same command resumes; more seeds are added; other prompts are refused unless --overwrite
    again = ["sample", "--model", str(text_dir), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--out", str(out), *RUN]
    assert main(again) == 0 and "6 of 6 images already in" in capsys.readouterr().out
    more = [a if a != "2-4" else "2-5" for a in again]
    assert main(more) == 0 and (out / "p001-s000005.png").is_file()
    other = ["sample", "--model", str(text_dir), "--prompt", "a sandal", "--out", str(out), *RUN]
    assert main(other) == 2 and "prompts: ['a photo of a dress', 'an ankle boot'] -> ['a sandal']" in capsys.readouterr().err
    assert main(other + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("p*.png")) == [f"p000-s{s:06d}.png" for s in (2, 3, 4)]


def test_the_negative_prompt_is_recorded_and_changes_the_images(text_dir, tmp_path):
    base = ["sample", "--model", str(text_dir), "--prompt", PROMPTS[0], *RUN]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--negative-prompt", "a grey bag", "--out", str(tmp_path / "b")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / d / "p000-s000002.png")) for d in "ab")
    assert not np.array_equal(a, b)
    assert json.loads((tmp_path / "b" / "sampling.json").read_text())["settings"]["negative_prompt"] == "a grey bag"


@pytest.mark.parametrize("extra, message", [
    ([], "give --prompt TEXT (repeatable) or --prompts FILE"),
    (["--prompt", "a dress", "--labels", "3"], "not --labels"),
    (["--prompt", " "], "must not be empty"),
    (["--prompt", "a purple cat"], "does not know (cat, purple)"),
    (["--prompt", "a dress", "--negative-prompt", "a bag"], "unconditional input of cfg / ccfg"),
    (["--prompts", "nowhere.txt"], "does not exist"),
    (["--prompt", "a dress", "--pipeline", "nowhere"], "not a diffusers pipeline folder"),
])
def test_text_refusals_write_nothing(text_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sample", "--model", str(text_dir), "--out", str(out), "--steps", "2", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_class_model_refuses_prompts(tmp_path, capsys):
    from test_sampling import tiny_model
    elit.save_pretrained(tiny_model(), tmp_path / "tiny")
    for extra in (["--prompt", "a dress"], ["--negative-prompt", "x"], ["--pipeline", str(tmp_path)]):
        assert main(["sample", "--model", str(tmp_path / "tiny"), "--out", str(tmp_path / "s"), *extra]) == 2
        assert "is for text-to-image models; this model is class-conditional: use --labels" in capsys.readouterr().err


# ---------------------------------------------------------------------- a diffusers pipeline's text encoder
def tiny_qwen_pipeline(path):
    """A QwenImagePipeline folder with a tiny random Qwen2.5-VL text encoder (hidden 32, as the tiny model's
    joint_attention_dim) and a byte-level tokenizer made here (no merges: a token per byte), saved without
    transformer and VAE: what `--pipeline` reads, offline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2TokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), max_position_embeddings=2048,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]), vocab_size=len(tokenizer))
    torch.manual_seed(0)
    encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=encoder,
                             tokenizer=tokenizer, transformer=None)
    pipe.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return tiny_qwen_pipeline(tmp_path_factory.mktemp("pipe") / "qwen-pipeline")


def test_a_pipeline_folders_text_encoder_is_its_encode_prompt(pipeline_dir, text_dir, tmp_path):
    from diffusers import QwenImagePipeline
    model = elit.load_pretrained(text_dir)
    encoder = load_text_encoder(model.config, text_dir, pipeline=pipeline_dir)
    assert isinstance(encoder, PipelineEncoder)
    cond = encoder.encode(["a photo of a dress", "a much longer prompt than the first"])
    pipe = QwenImagePipeline.from_pretrained(str(pipeline_dir), transformer=None, vae=None)
    embeds, mask = pipe.encode_prompt(["a photo of a dress", "a much longer prompt than the first"])
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.mask, mask.bool())
    assert not cond.mask[0].all() and cond.mask[1].all()        # padded to the longer prompt, the padding masked
    out = tmp_path / "s"
    assert main(["sample", "--model", str(text_dir), "--pipeline", str(pipeline_dir), "--prompt", "a robot",
                 "--out", str(out), *RUN]) == 0       # any text: the pipeline's own tokenizer reads it
    record = json.loads((out / "sampling.json").read_text())["settings"]
    assert record["text_encoder"] == {"kind": "QwenImagePipeline", "folder": str(pipeline_dir.resolve())}
    negative = encoder.encode(["a robot", ""])
    want = to_uint8(elit.sample(model, [2, 3, 4], labels=negative[0], negative=negative[1], steps=2, budget=4,
                                guidance="ccfg", scale=1, weak_budget=2))
    assert np.array_equal(np.asarray(Image.open(out / "p000-s000003.png"))[..., None], want[1])


def test_a_pipeline_of_another_family_is_refused_from_its_index(text_dir, tmp_path):
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    (tmp_path / "sdxl").mkdir()
    (tmp_path / "sdxl" / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    config = elit.load_pretrained(text_dir).config
    with pytest.raises(UserError, match="is a StableDiffusion3Pipeline, but this model is a qwenimage transformer"):
        load_text_encoder(config, text_dir, pipeline=tmp_path / "sd3")
    with pytest.raises(UserError, match="elit encodes prompts with QwenImagePipeline"):
        load_text_encoder(config, text_dir, pipeline=tmp_path / "sdxl")


@pytest.mark.parametrize("name", ["StableDiffusion3Pipeline", "FluxPipeline", "WanPipeline"])
def test_each_pipelines_encode_prompt_maps_to_its_text_condition(name, tmp_path, monkeypatch):
    """The pipelines not built here for real: from_pretrained gets transformer and VAE as None (Wan: its
    second transformer too), offline; encode_prompt's outputs land where the adapter reads them (SD3 /
    FLUX: the pooled vector; Wan: no mask, padded to 512 as its __call__ pads)."""
    import diffusers
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": name}))
    embeds, pooled = torch.randn(2, 5, 4), torch.randn(2, 3)
    calls = {}

    class Fake:
        def to(self, device):
            return self

        def encode_prompt(self, *args, **kw):
            calls["encode"] = (args, kw)
            return {"StableDiffusion3Pipeline": (embeds, None, pooled, None),
                    "FluxPipeline": (embeds, pooled, torch.zeros(5, 3)), "WanPipeline": (embeds, None)}[name]

    def from_pretrained(folder, **kw):
        calls["load"] = kw
        return Fake()
    monkeypatch.setattr(getattr(diffusers, name), "from_pretrained", from_pretrained)
    encoder = PipelineEncoder(tmp_path)
    assert "load" not in calls                       # loaded on first use only
    cond = encoder.encode(["a", "b"])
    skip = {"transformer": None, "vae": None, **({"transformer_2": None} if name == "WanPipeline" else {})}
    assert {k: calls["load"][k] for k in skip} == skip and calls["load"]["local_files_only"] is True
    args, kw = calls["encode"]
    assert args[0] == ["a", "b"] and torch.equal(cond.embeds, embeds) and cond.mask is None
    if name == "WanPipeline":
        assert cond.pooled is None and kw["max_sequence_length"] == 512 and kw["do_classifier_free_guidance"] is False
    else:
        assert torch.equal(cond.pooled, pooled)
    if name == "StableDiffusion3Pipeline":
        assert kw["do_classifier_free_guidance"] is False
