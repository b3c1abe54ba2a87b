"""The properties every backbone adapter must have, as one test class each backbone subclasses
(tests/backbones/test_*.py): a new backbone is an adapter plus a subclass naming its presets.

Models are tiny (16x16 inputs, patch 2: 8x8 tokens, windows 4x4: 4 groups, J = 16) with every
parameter redrawn as randn / sqrt(fan_in) (0.5 for vectors), so no zero-initialised gate hides a
path and every property below can fail.
"""
from __future__ import annotations

import math

import pytest
import torch

import elit
from elit.cost import analytic_gflops, measured_gflops
from elit.model import ELITModel, preset_config
from elit.model.config import section_parts
from elit.model.interface import group_tokens


def randomize_(model, seed=0, keep_zero=()):
    """Redraw every parameter (those whose name contains one of `keep_zero` keep their values)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keep_zero):
                continue
            std = 1 / math.sqrt(math.prod(p.shape[1:])) if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


WRITE_ZERO = ("interface.write.attn.proj", "interface.write.mlp.fc2")


class BackboneSuite:
    preset: str                   # the ELIT preset under test
    plain_preset: str             # the same backbone without the interface
    tiny = dict(input_size=16, in_channels=3, hidden_size=32, num_heads=4, num_classes=5, window=[4, 4])
    # True when nothing but the latents passes the core, so an untrained Write makes the model
    # "head + tail with the core skipped"; False when the side stream also runs through the core.
    core_is_latents_only = True

    # ------------------------------------------------------------------ helpers
    def config(self, preset=None, **kw):
        preset = preset or self.preset
        fields = {**self.tiny, **kw}
        if not preset_config(preset).elastic:   # a plain preset takes the tiny backbone fields only
            fields = {k: v for k, v in fields.items() if section_parts({k: v})["backbone"]}
        return preset_config(preset, **fields)

    def model(self, seed=0, keep_zero=(), **kw) -> ELITModel:
        torch.manual_seed(seed)
        return randomize_(ELITModel(self.config(**kw)), seed, keep_zero).eval()

    def inputs(self, B=2, seed=1):
        g = torch.Generator().manual_seed(seed)
        shape = self.config().backbone.input_shape()
        return (torch.randn(B, *shape, generator=g), torch.rand(B, generator=g),
                torch.randint(0, 5, (B,), generator=g))

    # ------------------------------------------------------------------ budgets
    def test_every_budget_runs_and_fractions_floor(self):
        model = self.model()
        x, t, y = self.inputs()
        assert model.budgets == list(range(1, 17))
        with torch.no_grad():
            outs = {b: model(x, t, y, budget=b) for b in model.budgets}
            assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs.values())
            assert torch.equal(model(x, t, y, budget=None), outs[16])
            assert torch.equal(model(x, t, y, budget=0.5), outs[8])
            assert torch.equal(model(x, t, y, budget=0.6), outs[9])    # floor(9.6)
        assert (outs[1] - outs[16]).abs().max() > 1e-3                 # budgets change the computation

    def test_prefix_property(self):
        """Latent rows >= j never reach the output at budget j; rows < j do."""
        model = self.model()
        x, t, y = self.inputs()
        j = 5
        queries = model.interface.latent_queries
        with torch.no_grad():
            ref = model(x, t, y, budget=j)
            queries[j:] += 10 * torch.randn_like(queries[j:])
            assert torch.equal(model(x, t, y, budget=j), ref)
            queries[j - 1] += 1.0
            assert (model(x, t, y, budget=j) - ref).abs().max() > 1e-4
        model.train()
        model(x, t, y, budget=j).square().mean().backward()
        assert queries.grad[j:].abs().max() == 0 and queries.grad[:j].abs().max() > 0

    def test_zero_init_write_passes_the_head_output_to_the_tail(self):
        model = self.model(keep_zero=WRITE_ZERO)
        model.interface.write.zero_init()
        x, t, y = self.inputs()
        seen = []
        core = model._core

        def recording_core(h, *args):
            out = core(h, *args)
            seen.append((h, out[0]))
            return out
        model._core = recording_core
        with torch.no_grad():
            outs = [model(x, t, y, budget=b) for b in (1, 7, 16)]
        assert len(seen) == 3 and all(torch.equal(a, b) for a, b in seen)
        if self.core_is_latents_only:   # then the whole model is head + tail with the core skipped
            model._core = lambda h, side, ctx, core, kept: (h, side)
            with torch.no_grad():
                skipped = model(x, t, y)
            assert all(torch.allclose(o, skipped, atol=1e-5) for o in outs)
        model._core = core
        randomize_(model, seed=3)   # a trained-looking Write breaks the identity (the test can fail)
        seen.clear()
        model._core = recording_core
        with torch.no_grad():
            model(x, t, y, budget=16)
        assert not torch.allclose(seen[0][0], seen[0][1], atol=1e-3)

    # ------------------------------------------------------------------ independence
    def test_batch_elements_do_not_interact(self):
        model = self.model()
        x, t, y = self.inputs(B=3)
        with torch.no_grad():
            full = model(x, t, y, budget=4)
            one = model(x[1:2], t[1:2], y[1:2], budget=4)
        assert torch.allclose(full[1:2], one, atol=1e-5)

    def test_read_keeps_groups_apart(self):
        """A change in one window moves only that group's latents."""
        model = self.model()
        iface, cfg = model.interface, model.config
        grid, N, D, G = cfg.grid, math.prod(cfg.grid), cfg.backbone.hidden_size, cfg.num_groups
        g = torch.Generator().manual_seed(3)
        tokens, c = torch.randn(1, N, D, generator=g), torch.randn(1, D, generator=g)
        members = group_tokens(torch.arange(N).view(1, N, 1), grid, iface.window)[0, 2, :, 0]   # group 2's tokens
        changed = tokens.clone()
        changed[:, members] += torch.randn(1, len(members), D, generator=g)
        with torch.no_grad():
            base, _ = iface.read_latents(tokens, grid, c, kept=model.budgets[-1])
            after, _ = iface.read_latents(changed, grid, c, kept=model.budgets[-1])
        diff = (after - base).abs().amax(dim=(0, 2, 3))
        others = [k for k in range(G) if k != 2]
        assert diff[2] > 1e-3 and torch.equal(diff[others], torch.zeros(G - 1))

    # ------------------------------------------------------------------ training
    @pytest.mark.parametrize("budget", [3, 16])
    def test_gradient_checkpointing_gives_the_same_gradients(self, budget):
        x, t, y = self.inputs()
        grads = []
        for ckpt in (False, True):
            model = self.model().train()
            model.grad_checkpointing = ckpt
            model(x, t, y, budget=budget).square().mean().backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
        for name, g in grads[0].items():
            assert torch.allclose(g, grads[1][name], atol=1e-6, rtol=0), name

    def test_every_parameter_learns_at_full_budget(self):
        model = self.model().train()
        x, t, y = self.inputs()
        model(x, t, y, budget=16).square().mean().backward()
        assert [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0] == []

    # ------------------------------------------------------------------ persistence and cost
    def test_save_and_load_round_trip(self, tmp_path):
        model = self.model()
        x, t, y = self.inputs()
        elit.save_pretrained(model, tmp_path / "m")
        loaded = elit.load_pretrained(tmp_path / "m")
        assert loaded.config == model.config
        with torch.no_grad():
            for b in (2, None):
                assert torch.equal(loaded(x, t, y, budget=b), model(x, t, y, budget=b))

    def test_flops_grow_with_the_budget_and_match_the_counter(self):
        cfg = self.config()
        values = [analytic_gflops(cfg, b) for b in cfg.budget_space.budgets]
        assert all(a < b for a, b in zip(values, values[1:]))
        for b in (1, 16):
            measured = measured_gflops(cfg, b)
            assert abs(measured - analytic_gflops(cfg, b)) <= 0.02 * measured, b
        plain = self.config(self.plain_preset)
        measured = measured_gflops(plain)
        assert abs(measured - analytic_gflops(plain)) <= 0.02 * measured
        assert values[0] < measured < values[-1]   # Read + Write cost a little; low budgets save a lot

    # ------------------------------------------------------------------ errors
    @pytest.mark.parametrize("budget", [0, 17, -1, 1.5, 0.01, True, "4", torch.tensor([4, 8])])
    def test_invalid_budgets_raise(self, budget):
        model = self.model()
        with pytest.raises(ValueError, match="budget"):
            model(*self.inputs(), budget=budget)

    def test_bad_inputs_raise_clear_errors(self):
        model = self.model()
        x, t, y = self.inputs()
        odd = torch.randn(*x.shape[:-1], x.shape[-1] - 1)
        cases = [((x[:, :2], t, y), "shape"), ((odd, t, y), "multiples of the patch"),
                 ((x, torch.rand(3), y), "t must"), ((x, t + 2, y), r"\[0, 1\]"),
                 ((x, torch.full_like(t, float("nan")), y), r"\[0, 1\]"),
                 ((x, t, None), "y is required"), ((x, t, torch.tensor([0, 9])), "class labels"),
                 ((x.double(), t, y), "dtype|float")]
        for args, match in cases:
            with pytest.raises(ValueError, match=match):
                model(*args)

    def test_plain_backbone_has_no_budgets(self):
        torch.manual_seed(0)
        model = ELITModel(self.config(self.plain_preset)).eval()
        x, t, y = self.inputs()
        assert model.budgets == [] and model.interface is None
        assert model(x, t, y).shape == x.shape
        with pytest.raises(ValueError, match="no latent interface"):
            model(x, t, y, budget=4)
