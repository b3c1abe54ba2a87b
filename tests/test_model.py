"""The ELIT model: shapes, budgets, the properties the method relies on, and input errors."""
import json
import math

import pytest
import torch

import elit
from elit.interface import group_tokens, ungroup_tokens
from elit.layers import apply_rope, rope_frequencies

TINY = dict(input_size=16, in_channels=3, patch_size=2, hidden_size=32, depth=4, num_heads=4,
            num_classes=5, head_depth=1, tail_depth=1, window=[4, 4])  # 8x8 tokens, 4 groups, J=16


def tiny(**kw):
    torch.manual_seed(0)
    return elit.create_model("ELIT-DiT-S/2", **{**TINY, **kw})


def randomize_(model, seed=0, keep_zero=()):
    """Redraw every parameter as randn / sqrt(fan_in) (0.5 for vectors), so that no adaLN gate or
    output layer is zero and every path of the model shows up in its output; parameters whose
    name contains one of `keep_zero` keep their (zero) initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keep_zero):
                continue
            std = 1 / math.sqrt(math.prod(p.shape[1:])) if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(B=2, C=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, size, size, generator=g), torch.rand(B, generator=g), torch.randint(0, 5, (B,), generator=g)


def test_shapes_at_every_budget_and_float_int_agree():
    model = randomize_(tiny()).eval()
    x, t, y = inputs()
    assert model.budgets == list(range(1, 17))
    outs = {}
    with torch.no_grad():
        for b in model.budgets:
            outs[b] = model(x, t, y, budget=b)
            assert outs[b].shape == x.shape
        assert torch.equal(model(x, t, y, budget=1.0), outs[16])
        assert torch.equal(model(x, t, y, budget=None), outs[16])
        assert torch.equal(model(x, t, y, budget=0.5), outs[8])
        assert torch.equal(model(x, t, y, budget=0.6), outs[9])   # floor(9.6)
        assert torch.equal(model(x, t, y, budget=1 / 16), outs[1])
    # budgets really change the computation
    assert (outs[1] - outs[16]).abs().max() > 1e-3


@pytest.mark.parametrize("budget", [0, 17, -1, 0.0, 1.5, -0.25, 0.01, True, "4", 4.0 + 1])
def test_invalid_budgets_raise(budget):
    model = tiny()
    x, t, y = inputs()
    with pytest.raises(ValueError, match="budget"):
        model(x, t, y, budget=budget)


def test_min_budget_limits_valid_budgets():
    model = tiny(min_budget=4)
    assert model.budgets == list(range(4, 17))
    with pytest.raises(ValueError, match="valid"):
        model.resolve_budget(3)
    with pytest.raises(ValueError, match="smallest"):
        model.resolve_budget(0.125)  # 2 of 16


def test_plain_backbone_has_no_budgets():
    model = elit.create_model("DiT-S/2", **{k: v for k, v in TINY.items() if k not in ("head_depth", "tail_depth", "window")})
    x, t, y = inputs()
    assert model.budgets == [] and model(x, t, y).shape == x.shape
    with pytest.raises(ValueError, match="no latent interface"):
        model(x, t, y, budget=4)


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    x, t, y = inputs()
    with pytest.raises(ValueError, match="shape"):
        model(x[:, :2], t, y)
    with pytest.raises(ValueError, match="multiples of the patch"):
        model(torch.randn(2, 3, 15, 16), t, y)
    with pytest.raises(ValueError, match="not divisible into windows"):
        model(torch.randn(2, 3, 20, 20), t, y)      # 10x10 tokens, 4x4 windows
    with pytest.raises(ValueError, match="t must"):
        model(x, torch.rand(3), y)
    with pytest.raises(ValueError, match="y is required"):
        model(x, t, None)
    with pytest.raises(ValueError, match="unknown model config field"):
        tiny(hidden=3)
    with pytest.raises(ValueError, match="unknown model"):
        elit.create_model("ELIT-DiT-Q/2")
    with pytest.raises(ValueError, match="core block"):
        tiny(head_depth=2, tail_depth=2)


def test_other_resolution_changes_number_of_groups():
    model = randomize_(tiny()).eval()
    x, t, y = inputs(size=32)   # 16x16 tokens -> 16 windows of 4x4, J unchanged
    assert model(x, t, y, budget=3).shape == x.shape


def test_prefix_property_unused_latent_slots_have_no_effect():
    model = randomize_(tiny()).eval()
    x, t, y = inputs()
    j = 5
    ref = model(x, t, y, budget=j)
    with torch.no_grad():
        model.interface.latent_queries[j:] += 10 * torch.randn_like(model.interface.latent_queries[j:])
    assert torch.equal(model(x, t, y, budget=j), ref)
    model.train()
    model(x, t, y, budget=j).square().mean().backward()
    grad = model.interface.latent_queries.grad
    assert grad[j:].abs().max() == 0 and grad[:j].abs().max() > 0


def test_fresh_elit_equals_head_plus_tail_with_core_skipped():
    """Read's adaLN and Write's output layers start at zero: the tail first sees the head's output."""
    model = tiny()
    zero_parts = ("interface.read.adaLN_modulation", "interface.write.attn.proj", "interface.write.mlp.fc2")
    randomize_(model, keep_zero=zero_parts).eval()
    x, t, y = inputs()
    bb = model.backbone
    head, core, tail = model.layout()
    with torch.no_grad():
        state = bb.embed(x, t, y)
        rope = bb.rope(bb.spatial_coordinates(state.grid), x.device)
        h = state.tokens
        for i in list(head) + list(tail):
            h = bb.blocks[i](h, state.cond, rope)
        expected = bb.finish(h, state)
        for b in (1, 7, 16):
            assert torch.allclose(model(x, t, y, budget=b), expected, atol=1e-5)
    # and a trained-looking Write breaks the equality (the test can fail)
    randomize_(model)
    with torch.no_grad():
        assert not torch.allclose(model(x, t, y, budget=16), expected, atol=1e-3)


@pytest.mark.parametrize("budget", [3, 16])
def test_every_parameter_used_by_a_budget_gets_a_gradient(budget):
    model = randomize_(tiny()).train()
    x, t, y = inputs()
    model(x, t, y, budget=budget).square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    if budget == 16:
        assert no_grad == []
    else:
        assert no_grad == ["interface.latent_queries"] or no_grad == []
        assert model.interface.latent_queries.grad[budget:].abs().max() == 0


def test_groups_are_independent_in_read():
    model = randomize_(tiny()).eval()
    iface = model.interface
    grid, D = (8, 8), 32
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(1, 64, D, generator=g)
    c = torch.randn(1, D, generator=g)
    base, _ = iface.read_latents(tokens, grid, c, kept=16)
    changed = tokens.clone().view(1, 8, 8, D)
    # window (row 1, col 0) = group 2; a random change (a constant one would vanish in LayerNorm)
    changed[:, 4:8, 0:4] += torch.randn(1, 4, 4, D, generator=g)
    after, _ = iface.read_latents(changed.view(1, 64, D), grid, c, kept=16)
    diff = (after - base).abs().amax(dim=(0, 2, 3))
    assert diff[2] > 1e-3
    assert torch.equal(diff[[0, 1, 3]], torch.zeros(3))


def test_batch_elements_do_not_interact():
    model = randomize_(tiny()).eval()
    x, t, y = inputs(B=3)
    with torch.no_grad():
        full = model(x, t, y, budget=4)
        one = model(x[1:2], t[1:2], y[1:2], budget=4)
    assert torch.allclose(full[1:2], one, atol=1e-5)


@pytest.mark.parametrize("grid,window", [((8, 8), (4, 4)), ((8, 6), (2, 3)), ((4, 8, 8), (2, 4, 4))])
def test_grouping_round_trip_and_window_contents(grid, window):
    N = math.prod(grid)
    x = torch.arange(N, dtype=torch.float32).view(1, N, 1)
    grouped = group_tokens(x, grid, window)
    assert grouped.shape == (1, math.prod(g // w for g, w in zip(grid, window)), math.prod(window), 1)
    assert torch.equal(ungroup_tokens(grouped, grid, window), x)
    # every group holds exactly the raster indices of one window
    coords = torch.stack(torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij"), -1).view(N, -1)
    for members in grouped[0, :, :, 0].long():
        c = coords[members]
        spans = c.max(0).values - c.min(0).values + 1
        assert spans.tolist() == list(window)


def test_rope_scores_depend_on_relative_position_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)

    def score(pq, pk):
        rq = rope_frequencies(torch.tensor([pq]), 16)
        rk = rope_frequencies(torch.tensor([pk]), 16)
        return (apply_rope(q, rq) * apply_rope(k, rk)).sum()

    assert torch.allclose(score([2, 3], [5, 1]), score([7, 4], [10, 2]), atol=1e-5)
    assert not torch.allclose(score([2, 3], [5, 1]), score([2, 3], [6, 1]), atol=1e-3)


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = randomize_(tiny()).eval()
    x, t, y = inputs()
    elit.save_pretrained(model, tmp_path / "m")
    loaded = elit.load_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y, budget=4), model(x, t, y, budget=4))
    (tmp_path / "m" / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an elit model config"):
        elit.load_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not an elit model folder"):
        elit.load_pretrained(tmp_path / "missing")


def test_list_models_and_paper_layouts():
    names = elit.list_models()
    for size in ("S", "B", "L", "XL"):
        for p in (2, 4, 8):
            assert f"DiT-{size}/{p}" in names and f"ELIT-DiT-{size}/{p}" in names
    with torch.device("meta"):
        xl = elit.create_model("ELIT-DiT-XL/2")
        b = elit.create_model("ELIT-DiT-B/2")
    assert [len(r) for r in xl.layout()] == [4, 20, 4]
    assert [len(r) for r in b.layout()] == [2, 8, 2]
    assert xl.interface.window == (4, 4) and xl.budgets == list(range(1, 17))
    with torch.device("meta"):
        xl512 = elit.create_model("ELIT-DiT-XL/2", input_size=64)
    assert xl512.interface.window == (8, 8) and xl512.budgets[0] == 4 and xl512.budgets[-1] == 64
