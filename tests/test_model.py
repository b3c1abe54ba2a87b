"""The model side beyond the per-backbone suite (tests/backbones): configs, presets, budget rules,
grouping, RoPE, and the layering rule that the model imports nothing else from elit."""
import json
import pathlib
import math

import pytest
import torch

import elit
from elit.model.interface import group_tokens, ungroup_tokens
from elit.model.layers import apply_rope, rope_frequencies

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


def test_min_budget_limits_valid_budgets():
    model = tiny(min_budget=4)
    assert model.budgets == list(range(4, 17))
    with pytest.raises(ValueError, match="valid"):
        model.resolve_budget(3)
    with pytest.raises(ValueError, match="smallest"):
        model.resolve_budget(0.125)  # 2 of 16


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
    with pytest.raises(ValueError, match="unknown config key model.backbone.hidden"):
        tiny(hidden=3)
    with pytest.raises(ValueError, match="unknown model"):
        elit.create_model("ELIT-DiT-Q/2")
    with pytest.raises(ValueError, match="core block"):
        tiny(head_depth=2, tail_depth=2)


def test_other_resolution_changes_number_of_groups():
    model = randomize_(tiny()).eval()
    x, t, y = inputs(size=32)   # 16x16 tokens -> 16 windows of 4x4, J unchanged
    assert model(x, t, y, budget=3).shape == x.shape


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


def test_every_preset_builds_with_keyword_overrides():
    """`create_model(name, input_size=32, in_channels=4, num_classes=10, hidden_size=96, num_heads=4)`
    works for every preset, and a preset's ELIT form has the same backbone as its plain form."""
    small = dict(input_size=32, in_channels=4, num_classes=10, hidden_size=96, num_heads=4)
    t, y = torch.rand(1), torch.tensor([3])
    for name in elit.list_models():
        with torch.device("meta"):
            full = elit.create_model(name)
        assert full.config.backbone.hidden_size >= 384, name
        model = elit.create_model(name, **small).eval()
        x = torch.randn(1, *model.sample_shape())       # (4, 32, 32), or (4, 8, 32, 32) for video
        with torch.no_grad():
            for budget in (model.budgets[0], None) if model.budgets else (None,):
                assert model(x, t, y, budget=budget).shape == x.shape, name
        if name.startswith("ELIT-"):
            plain = elit.model.preset_config(name[len("ELIT-"):], **small)
            assert plain.backbone == model.config.backbone and not plain.elastic


def test_config_is_frozen_has_one_spelling_and_keyword_names_for_it():
    cfg = tiny().config
    with pytest.raises(Exception):
        cfg.backbone.hidden_size = 64
    assert elit.ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="from_flat"):      # the flat form is read at old files' edge only
        elit.ModelConfig.from_dict({"hidden_size": 32, "elit": True})
    assert cfg.override(hidden_size=64).backbone.hidden_size == 64 and cfg.backbone.hidden_size == 32
    both = cfg.override(head_depth=1, interface={"qk_norm": "head"}, interface_mlp_bias=True)
    assert (both.split.head, both.interface.qk_norm, both.interface.mlp_bias) == (1, "head", True)
    with pytest.raises(ValueError, match="given twice"):
        cfg.override(head_depth=1, split={"head": 2})
    with pytest.raises(ValueError, match="for an ELIT model"):
        cfg.override(elit=False, window=[2, 2])
    plain = cfg.override(elit=False)
    assert plain.interface is None and plain.split is None and plain.budget_space.budgets == []
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ValueError, match="unknown model config part"):
        elit.ModelConfig.from_dict({**cfg.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="unknown backbone"):
        elit.ModelConfig.from_dict({**cfg.to_dict(), "backbone": {"name": "resnet"}})


def test_one_budget_space_serves_model_config_and_cost():
    model = tiny(min_budget=3)
    space = model.budget_space
    assert space == model.config.budget_space == elit.BudgetSpace(16, 3)
    assert space.budgets == model.budgets == list(range(3, 17))
    assert [space.resolve(b) for b in (None, 5, 0.5, 1.0)] == [16, 5, 8, 16]
    from elit.cost import analytic_gflops
    from elit.sampling import sampling_gflops
    for bad in (2, 17, 0.125):
        for call in (lambda: model(*inputs(), budget=bad), lambda: analytic_gflops(model.config, bad),
                     lambda: sampling_gflops(model.config, steps=2, budget=bad)):
            with pytest.raises(ValueError, match="budget"):
                call()
    assert elit.BudgetSpace().budgets == [] and elit.BudgetSpace().resolve(None) is None


def test_model_side_imports_nothing_else_from_elit():
    """elit.model may import only itself and the leaf elit.errors (the layering the docs promise)."""
    import ast
    root = pathlib.Path(elit.__file__).parent / "model"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("elit") and not name.startswith(("elit.model", "elit.errors")):
                    pytest.fail(f"{path.relative_to(root.parent)} imports {name}")


def test_wrapping_pretrained_weights_initialises_only_the_interface():
    plain = elit.create_model("U-ViT-original-S/2", input_size=16, in_channels=3, hidden_size=32, num_heads=4,
                              num_classes=5, depth=5)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    cfg = plain.config.override(elit=True, head_depth=1, tail_depth=1, window=[4, 4], latent_pos="learned")
    model = elit.ELITModel(cfg, backbone=plain.backbone)
    assert model.backbone is plain.backbone                      # shared, not copied
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in before.items())   # not re-initialised
    assert model.interface.write.attn.proj.weight.abs().max() == 0                  # the interface is fresh
    with pytest.raises(ValueError, match="other arguments"):
        elit.ELITModel(cfg.override(hidden_size=64, num_heads=4), backbone=plain.backbone)


@pytest.mark.parametrize("window", [(4, 4), (8, 8), (3, 5), (2, 4, 4), (1, 1), (16, 16)])
def test_coarse_to_fine_order_is_a_spread_out_permutation(window):
    """Every window cell once; each power-of-four prefix of a square power-of-two window is the
    regular sub-lattice with that many cells (so kept latents spread over their window)."""
    from elit.model.positions import coarse_to_fine_order
    order = coarse_to_fine_order(window).tolist()
    assert sorted(order) == list(range(math.prod(window)))
    if len(window) == 2 and window[0] == window[1] and window[0] & (window[0] - 1) == 0:
        w = window[0]
        for n in (1, 4, 16, 64):
            if n <= w * w:
                stride = w // int(math.isqrt(n))
                lattice = {r * w + c for r in range(0, w, stride) for c in range(0, w, stride)}
                assert set(order[:n]) == lattice, n
    if window == (4, 4):
        assert order[:4] == [0, 8, 2, 10]          # (0,0), (2,0), (0,2), (2,2)


def test_latent_pos_tokens_reuses_the_spatial_rope_of_each_latents_token():
    from elit.model.backbones import CoreLayout
    from elit.model.positions import LatentPositions
    model = elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1, tail_depth=1,
                              input_size=16, in_channels=1, num_classes=2, latent_pos="tokens").eval()
    x, t, y = torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([0, 1])
    _, _, ctx = model.backbone.embed(x, t, y)
    index = model.interface.latent_token_index(model.config.grid, 3)
    assert torch.equal(model.interface.core_positions((8, 8), 3).token_index, index)
    core = model.backbone.core_context(ctx, CoreLayout(4, 3, LatentPositions(token_index=index)))
    assert all(torch.equal(c, s[index]) for c, s in zip(core.rope, ctx.rope))
    assert model(x, t, y, budget=3).shape == x.shape
    with pytest.raises(ValueError, match="latent_pos='tokens' needs"):
        elit.create_model("ELIT-U-ViT-original-S/2", latent_pos="tokens")


@pytest.mark.parametrize("grid,window", [((8, 8), (2, 2)), ((16, 16), (4, 4)), ((6, 9), (3, 3)),
                                         ((4, 8, 8), (2, 4, 4)), ((12,), (3,))])
def test_learned_latent_rows_are_checked_without_reading_the_index(grid, window):
    """The table-size check uses Python ints (a tensor max would be a device sync per forward);
    they must agree with the index the forward builds, for both index conventions and every budget."""
    from elit.model.positions import _learned_index, _learned_rows_needed
    n = math.prod(window)
    for J in (n, n + 3, 2):          # J = tokens per window: the authors' raster convention
        for kept in range(1, J + 1):
            index = _learned_index(grid, window, kept, J)
            assert index.shape == (math.prod(grid) // n, kept)
            assert _learned_rows_needed(grid, window, kept, J) == int(index.max()) + 1, (J, kept)


def test_learned_latent_table_too_small_for_the_grid_is_an_error():
    model = elit.create_model("ELIT-DiT-S/2", input_size=16, in_channels=4, hidden_size=32, num_heads=4,
                              num_classes=5, latent_pos="learned", latent_pos_table_size=64)
    iface = model.interface                      # 8x8 tokens, 4x4 windows, J = 16: 64 rows suffice
    assert iface._latent_pos_index((8, 8), 16).max() == 63
    with pytest.raises(elit.UserError, match="64 rows, too few for a token grid of \\(8, 12\\)"):
        iface._latent_pos_index((8, 12), 16)
