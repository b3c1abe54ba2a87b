"""The shared backbone properties for the diffusers MM-DiTs (tests/backbones/test_qwenimage.py,
test_sd3.py), plus what only an MM-DiT has (a text stream, the diffusers signature).

The shared suite (backbone_suite.BackboneSuite) is written against `model(x, t, y, budget=)`; an
MM-DiT's ELITModel takes the same call with y a TextCondition (x (B, C, H, W) latents), so this
class only swaps the helpers that build a config, a model and inputs, and rewrites the few tests
that are about class labels or presets. The models are tiny diffusers transformers built from
random weights (16x16 latents, patch 2: 8x8 tokens, windows 4x4: 4 groups, J = 16; 6 text tokens).
"""
from __future__ import annotations

import math

import pytest
import torch

from backbone_suite import BackboneSuite, randomize_
from elit.cost import analytic_gflops, measured_gflops
from elit.interop.diffusers import elastic_config, make_elastic
from elit.model import ELITModel, TextCondition

TEXT = 6


class MMDiTSuite(BackboneSuite):
    core_is_latents_only = False   # the text stream runs through the core with the latents
    masked = True                  # the backbone takes a text mask (Qwen-Image; SD3 does not)
    kwargs_name = "attention_kwargs"   # the forward's attention kwargs (SD3: joint_attention_kwargs)
    window = (4, 4)                    # 4 windows of the tiny input's tokens, J = 16
    # the tiny input's geometry, as make_elastic / elastic_config take it (a video model adds frames, width)
    geometry = dict(input_size=16, text_tokens=TEXT)

    # ------------------------------------------------------------------ helpers (override in subclasses)
    def transformer(self):
        raise NotImplementedError

    def config(self, preset=None, elastic=True, **kw):
        split = dict(head_depth=kw.pop("head_depth", 1), tail_depth=kw.pop("tail_depth", 1),
                     window=kw.pop("window", self.window)) if elastic else {}
        return elastic_config(self.transformer(), elit=elastic, **self.geometry, **split, **kw)

    def model(self, seed=0, keep_zero=(), elastic=True, **kw) -> ELITModel:
        torch.manual_seed(seed)
        config = self.config(elastic=elastic, **kw)
        backbone = config.adapter(config.backbone, self.transformer())
        return randomize_(ELITModel(config, backbone=backbone), seed, keep_zero).eval()

    def condition(self, B, g) -> TextCondition:
        raise NotImplementedError

    def inputs(self, B=2, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(B, 3, 16, 16, generator=g), torch.rand(B, generator=g), self.condition(B, g)

    def diffusers_call(self, x, t, y) -> dict:
        """The same input in the transformer's own forward arguments."""
        raise NotImplementedError

    # ------------------------------------------------------------------ rewritten shared tests
    def test_every_parameter_learns_at_full_budget(self):
        """At full budget exactly the parameters diffusers' own forward leaves unused get no gradient
        (the last block's text outputs are discarded), and every interface parameter learns."""
        model = self.model().train()
        x, t, y = self.inputs()
        model(x, t, y, budget=16).square().mean().backward()
        unused = {n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0}
        tr = randomize_(self.transformer())
        tr(**self.diffusers_call(x, t, y), return_dict=False)[0].square().mean().backward()
        teacher_unused = {f"backbone.transformer.{n}" for n, p in tr.named_parameters()
                          if p.grad is None or p.grad.abs().max() == 0}
        assert unused == teacher_unused and not any(n.startswith("interface.") for n in unused)

    def test_flops_grow_with_the_budget_and_match_the_counter(self):
        cfg = self.config()
        values = [analytic_gflops(cfg, b) for b in cfg.budget_space.budgets]
        assert all(a < b for a, b in zip(values, values[1:]))
        for b in (1, 16):
            assert analytic_gflops(cfg, b) == pytest.approx(measured_gflops(cfg, b), rel=1e-9), b
        plain = self.config(elastic=False)
        assert analytic_gflops(plain) == pytest.approx(measured_gflops(plain), rel=1e-9)
        assert values[0] < analytic_gflops(plain) < values[-1]

    def test_flops_count_the_text_tokens(self):
        """Text tokens join every attention: more text, more FLOPs, at every budget."""
        import dataclasses
        cfg = self.config()
        longer = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, text_tokens=4 * TEXT))
        for b in (1, 16):
            assert analytic_gflops(longer, b) > analytic_gflops(cfg, b)
            assert analytic_gflops(longer, b) == pytest.approx(measured_gflops(longer, b), rel=1e-9)

    def test_bad_inputs_raise_clear_errors(self):
        model = self.model()
        x, t, y = self.inputs()
        wide = TextCondition(torch.randn(2, TEXT, y.embeds.shape[-1] + 1), pooled=y.pooled)
        cases = [((x[:, :2], t, y), "shape"), ((x, torch.rand(3), y), "t must"), ((x, t + 2, y), r"\[0, 1\]"),
                 ((x, t, None), "TextCondition"), ((x, t, torch.tensor([0, 1])), "TextCondition"),
                 ((x, t, y[:1]), "1 prompts for a batch of 2"), ((x, t, wide), "features"),
                 ((x.double(), t, y), "dtype|float")]
        for args, match in cases:
            with pytest.raises(ValueError, match=match):
                model(*args)

    def test_plain_backbone_has_no_budgets(self):
        model = self.model(elastic=False)
        x, t, y = self.inputs()
        assert model.budgets == [] and model.interface is None
        assert model(x, t, y).shape == x.shape
        with pytest.raises(ValueError, match="no latent interface"):
            model(x, t, y, budget=4)

    # ------------------------------------------------------------------ MM-DiT only
    def test_interface_off_equals_the_diffusers_forward_exactly(self):
        """The adapter calls the transformer's own submodules: with the interface off (elit=False)
        the diffusers signature and elit's own signature both equal diffusers' forward bit for bit."""
        tr = randomize_(self.transformer()).eval()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        with torch.no_grad():
            ref = tr(**call, return_dict=False)[0]
            plain = make_elastic(tr, elit=False, **self.geometry)
            out = plain(**call, return_dict=False)[0]
            assert torch.equal(out, ref)
            assert torch.equal(plain(**call).sample, ref)
            assert torch.equal(self.to_image(plain.model(x, t, y)), self.to_image(ref))

    def test_both_signatures_run_the_one_embedded_forward(self, monkeypatch):
        """model(x, t, y) and the diffusers signature differ only in how they embed: both end in
        ELITModel.forward_embedded (patched here to count), and give the same output at a budget."""
        calls = []
        real = ELITModel.forward_embedded

        def spy(model, embedded, kept):
            calls.append(kept)
            return real(model, embedded, kept)
        monkeypatch.setattr(ELITModel, "forward_embedded", spy)
        model = self.model()
        x, t, y = self.inputs()
        with torch.no_grad():
            native = model(x, t, y, budget=4)
            wrapped = make_elastic(model)(**self.diffusers_call(x, t, y), budget=4, return_dict=False)[0]
        assert calls == [4, 4]
        torch.testing.assert_close(self.to_image(wrapped), native, rtol=1e-5, atol=1e-5)
        assert model.backbone.attention_kwargs_name == self.kwargs_name

    def test_attention_kwargs_are_honoured_and_never_mutated(self):
        """The LoRA `scale` is popped as diffusers' apply_lora_scale pops it; our budget keys are read
        from a copy; the caller's dict is left as it was."""
        tr = randomize_(self.transformer()).eval()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        with torch.no_grad():
            ref = tr(**call, **{self.kwargs_name: {"scale": 0.5}}, return_dict=False)[0]
            mine = {"scale": 0.5, "elit_budget": None}
            out = make_elastic(tr, elit=False, **self.geometry)(**call, **{self.kwargs_name: mine}, return_dict=False)[0]
        assert torch.equal(out, ref) and mine == {"scale": 0.5, "elit_budget": None}

    def test_a_real_peft_lora_is_scaled_as_in_the_stock_transformer(self):
        """With real PEFT LoRA layers (peft is in the test extra), the `scale` of the attention kwargs
        changes the output, the plain adapter's output equals the stock transformer's bit for bit at
        every scale, and the layers are back at their own scale after the call."""
        pytest.importorskip("peft", reason="pip install peft (in elit-diffusion[test])")
        from peft import LoraConfig
        tr = randomize_(self.transformer()).eval()
        torch.manual_seed(0)   # init_lora_weights=False: random A and B, so the LoRA path is not zero
        tr.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False))
        layers = [m for m in tr.modules() if type(m).__name__ == "Linear" and hasattr(m, "scaling")]
        assert layers, "peft added no LoRA layer"
        plain = make_elastic(tr, elit=False, **self.geometry)
        call = self.diffusers_call(*self.inputs())
        outs = {}
        with torch.no_grad():
            for scale in (1.0, 0.5, 0.0):
                ref = tr(**call, **{self.kwargs_name: {"scale": scale}}, return_dict=False)[0]
                outs[scale] = plain(**call, **{self.kwargs_name: {"scale": scale}}, return_dict=False)[0]
                assert torch.equal(outs[scale], ref), scale
                assert all(m.scaling["default"] == 1.0 for m in layers)     # unscaled again after the call
            tr.disable_adapters()
            without = plain(**call, return_dict=False)[0]
        assert not torch.equal(outs[1.0], outs[0.5]) and not torch.equal(outs[0.5], outs[0.0])
        torch.testing.assert_close(outs[0.0], without)      # scale 0 switches the LoRA off

    def test_make_elastic_shares_the_weights_and_adds_only_the_interface(self):
        tr = randomize_(self.transformer())
        before = {n: p.detach().clone() for n, p in tr.named_parameters()}
        elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=self.window, **self.geometry)
        own = {f"model.backbone.transformer.{n}" for n in before}
        names = {n for n, _ in elastic.named_parameters()}
        assert own <= names and all(n.startswith("model.interface.") for n in names - own) and names - own
        assert all(torch.equal(p, before[n]) for n, p in tr.named_parameters())           # nothing re-initialised
        shared = dict(elastic.named_parameters())
        assert all(shared[f"model.backbone.transformer.{n}"] is p for n, p in tr.named_parameters())
        assert elastic.budgets == list(range(1, 17)) and elastic.config is tr.config

    def test_an_elastic_wrapper_saves_and_loads_without_its_teacher(self, tmp_path):
        """elit.save_pretrained(make_elastic(...)) writes the ELITModel; load_pretrained rebuilds the
        diffusers transformer from the saved geometry (diffusers imported lazily) with equal outputs."""
        import elit
        elastic = make_elastic(randomize_(self.transformer()), head_depth=1, tail_depth=1, window=self.window,
                               **self.geometry)
        elit.save_pretrained(elastic, tmp_path / "m")
        loaded = elit.load_pretrained(tmp_path / "m")
        x, t, y = self.inputs()
        with torch.no_grad():
            assert torch.equal(loaded(x, t, y, budget=5), elastic.model.eval()(x, t, y, budget=5))
            call = self.diffusers_call(x, t, y)
            assert torch.equal(make_elastic(loaded)(**call, budget=5).sample, elastic(**call, budget=5).sample)

    def test_core_blocks_see_full_text_with_its_mask_and_the_kept_latents(self):
        model = self.model()
        x, t, y = self.inputs()
        head, core, tail = model.layout()
        seen = []

        def record(module, args, kwargs):
            seen.append((kwargs["hidden_states"].shape[1], kwargs["encoder_hidden_states"].shape[1],
                         kwargs.get("encoder_hidden_states_mask")))
        hooks = [model.backbone.blocks[i].register_forward_pre_hook(record, with_kwargs=True) for i in core]
        with torch.no_grad():
            for j in (1, 5, 16):
                seen.clear()
                model(x, t, y, budget=j)
                assert [s[:2] for s in seen] == [(4 * j, TEXT)] * len(core)        # G = 4 groups of j latents
                if self.masked:
                    assert all(torch.equal(s[2], y.mask) for s in seen)
        for hook in hooks:
            hook.remove()

    def test_latents_sit_on_spread_out_tokens_of_their_window(self):
        """latent_pos="tokens": at budget j each group's latents take the positions of the first j
        tokens of coarse_to_fine_order(window): at j = 4 the stride-2 sub-lattice of the 4x4 window,
        and at full budget exactly the positions of all image tokens."""
        model = self.model()
        iface, grid = model.interface, model.config.grid
        full = iface.latent_token_index(grid, 16)
        assert sorted(full.tolist()) == list(range(math.prod(grid)))
        rows, cols = iface.latent_token_index(grid, 4) // 8, iface.latent_token_index(grid, 4) % 8
        assert rows.view(4, 4).remainder(4).tolist() == [[0, 2, 0, 2]] * 4     # within-window row
        assert cols.view(4, 4).remainder(4).tolist() == [[0, 0, 2, 2]] * 4
        for j in (1, 4, 7):   # every budget keeps a prefix of the full-budget order
            assert torch.equal(iface.latent_token_index(grid, j).view(4, j), full.view(4, 16)[:, :j])

    def test_caption_changes_the_core_and_the_output(self):
        model = self.model()
        x, t, y = self.inputs()
        other = self.condition(2, torch.Generator().manual_seed(9))
        with torch.no_grad():
            assert (model(x, t, y, budget=3) - model(x, t, other, budget=3)).abs().max() > 1e-3

    def to_image(self, out):
        return out
