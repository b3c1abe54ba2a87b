"""The original U-ViT (time and class as tokens, pre-LN blocks) under the shared backbone tests, and
the conversion of baofff/U-ViT checkpoints with parity to the reference fixture."""
import pytest
import torch
from safetensors.torch import load_file

import elit
from backbone_suite import BackboneSuite
from elit.cli import main


class TestUViTOriginal(BackboneSuite):
    preset, plain_preset = "ELIT-U-ViT-original-S/2", "U-ViT-original-S/2"
    tiny = dict(BackboneSuite.tiny, depth=5, head_depth=1, tail_depth=1)
    core_is_latents_only = False   # the time and class tokens run through the core with the latents

    def test_extra_tokens_travel_through_the_core(self):
        """The core conditions on the class token: changing only the class changes what the core
        computes, even with a zero Write (the extras return to the tail)."""
        model = self.model()
        x, t, y = self.inputs()
        with torch.no_grad():
            a = model(x, t, y, budget=4)
            b = model(x, t, (y + 1) % 5, budget=4)
        assert (a - b).abs().max() > 1e-3

    def test_depth_must_be_odd(self):
        with pytest.raises(ValueError, match="odd"):
            self.config(depth=6, head_depth=1, tail_depth=1)


@pytest.mark.parametrize("weights", ["nnet.pth", "weights.safetensors"])
def test_baofff_checkpoint_converts_with_parity(fixtures_dir, tmp_path, weights):
    fx = fixtures_dir / "uvit-a"
    out = tmp_path / "uvit"
    assert main(["convert", "--from", "uvit", "--weights", str(fx / weights), "--config", str(fx / "config.json"),
                 "--out", str(out)]) == 0
    model, io = elit.load_pretrained(out), load_file(str(fx / "io.safetensors"))
    assert model.config.backbone.prediction == "epsilon" and model.null_class_id == 10
    assert model.config.backbone.depth == 5 and model.budgets == []
    with torch.no_grad():
        for y, key in ((io["y"], "out"), (io["y_null"], "out_ynull")):
            out_ = model(io["x"], io["t"] / 1000, y)          # the reference takes the raw step
            assert torch.allclose(out_, io[key], atol=1e-4, rtol=1e-4), key
    # a convention slip shows: feeding the raw step moves the output far beyond the tolerance
    with torch.no_grad():
        assert not torch.allclose(model(io["x"], io["t"].clamp(max=1), io["y"]), io["out"], atol=1e-2)


def test_mismatched_uvit_checkpoint_is_refused_before_writing(fixtures_dir, tmp_path, capsys):
    fx = fixtures_dir / "uvit-a"
    bad = tmp_path / "bad.json"
    bad.write_text('{"constructor_kwargs": {"img_size": 16, "patch_size": 2, "in_chans": 4, "embed_dim": 64, '
                   '"depth": 6, "num_heads": 4, "num_classes": 11, "conv": false}}')
    assert main(["convert", "--from", "uvit", "--weights", str(fx / "nnet.pth"), "--config", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err and not (tmp_path / "o").exists()
