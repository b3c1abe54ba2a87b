"""Checkpoint interop: `elit convert` against the reference fixtures, other configs, and bad input."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import elit
from elit.cli import main
from elit.interop.convert import authors_budget_to_ours, convert_checkpoint, model_config, resolve_kwargs
from elit.model.interface import group_tokens

TOL = dict(atol=1e-4, rtol=1e-4)
BUDGETS = ("1.0", "0.6", "0.5", "0.25", "0.0625")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matmuls: a second intra-op thread only spins, and costs ~50x on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def maxdiff(a, b):
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- an independent reference layout
def mae_sincos(dim, grid):
    """The MAE/DiT 2-D sin-cos table as the reference computes it (numpy, float64 -> float32)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def enc(pos):
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    return torch.from_numpy(np.concatenate([enc(cols), enc(rows)], axis=1)).float()[None]


def reference_state(kw, source="authors-elit", seed=0):
    """A state dict with the reference's key names and shapes for constructor kwargs `kw`.

    Written from the reference code's rules, separately from elit.convert_reference; checked
    against the real fixture layout in test_reference_state_matches_fixture_layout.
    """
    g = torch.Generator().manual_seed(seed)
    D, p, C = kw["hidden_size"], kw["patch_size"], kw.get("in_channels", 4)
    M = int(D * kw.get("mlp_ratio", 4.0))
    rows = kw["num_classes"] + (kw.get("class_dropout_prob", 0.1) > 0)
    out_c = C * (2 if source == "dit" and kw.get("learn_sigma", True) else 1)
    shapes = {"x_embedder.proj.weight": (D, C, p, p), "x_embedder.proj.bias": (D,),
              "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
              "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
              "y_embedder.embedding_table.weight": (rows, D),
              "final_layer.linear.weight": (p * p * out_c, D), "final_layer.linear.bias": (p * p * out_c,),
              "final_layer.adaLN_modulation.1.weight": (2 * D, D), "final_layer.adaLN_modulation.1.bias": (2 * D,)}
    for i in range(kw["depth"]):
        for name, shape in (("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)), ("mlp.fc1", (M, D)),
                            ("mlp.fc2", (D, M)), ("adaLN_modulation.1", (6 * D, D))):
            shapes[f"blocks.{i}.{name}.weight"] = shape
            shapes[f"blocks.{i}.{name}.bias"] = shape[:1]
    if source == "authors-elit":
        J, r, w = kw["group_size"] ** 2, "input_token_editor.adapters.0", "output_token_editor.adapters.0"
        shapes.update({f"{r}.learned_query_embed": (J, D), f"{r}.pos_embed": (J, D), f"{w}.pos_embed": (J, D),
                       f"{r}.latent_pos_embed": (4096, D), f"{r}.fit_layer.adaLN_modulation.1.weight": (7 * D, D),
                       f"{r}.fit_layer.adaLN_modulation.1.bias": (7 * D,)})
        for attn, ff in ((f"{r}.fit_layer.latents_attend_to_patches.0", f"{r}.fit_layer.read_ff.0"),
                         (f"{w}.patches_attend_to_latents.0", f"{w}.write_ff.0")):
            for name, n_out in (("q_proj", D), ("kv_proj", 2 * D), ("proj", D)):
                shapes[f"{attn}.{name}.weight"], shapes[f"{attn}.{name}.bias"] = (n_out, D), (n_out,)
            shapes[f"{attn}.q_norm.scale"] = shapes[f"{attn}.k_norm.scale"] = (D,)
            shapes[f"{ff}.fc1.weight"] = shapes[f"{ff}.fc2.weight"] = (D, D)
    state = {k: torch.randn(s, generator=g) * (1 / math.sqrt(math.prod(s[1:])) if len(s) > 1 else 0.5)
             for k, s in shapes.items()}
    state["pos_embed"] = mae_sincos(D, kw["input_size"] // p)
    return state


def test_reference_state_matches_fixture_layout(fixtures_dir):
    for name, source in (("official-elit-sit-a", "authors-elit"), ("dit-a", "dit")):
        kw = json.loads((fixtures_dir / name / "config.json").read_text())["constructor_kwargs"]
        real = load_file(str(fixtures_dir / name / "weights.safetensors"))
        ours = reference_state(kw, source)
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in real.items()}
        assert maxdiff(ours["pos_embed"], real["pos_embed"]) < 1e-6


# ----------------------------------------------------------------------------- fixture parity via the CLI
@pytest.fixture
def elit_fixture(fixtures_dir, tmp_path):
    fx = fixtures_dir / "official-elit-sit-a"
    out = tmp_path / "elit-sit"
    assert main(["convert", "--from", "authors-elit", "--weights", str(fx / "weights.safetensors"),
                 "--config", str(fx / "config.json"), "--out", str(out)]) == 0
    return fx, elit.load_pretrained(out), load_file(str(fx / "io.safetensors")), out


def test_authors_elit_outputs_every_budget(elit_fixture):
    fx, model, io, out = elit_fixture
    meta = json.loads((fx / "config.json").read_text())
    window, grid = model.interface.window, model.config.grid
    raster = group_tokens(torch.arange(64.0).view(1, 64, 1), grid, window)[0, :, :, 0].long()
    with torch.no_grad():
        for b in BUDGETS:
            kept = authors_budget_to_ours(float(b), model)
            assert kept == meta["budgets"][b]["latents_kept_per_group"]
            # The same latents: the first `kept` of every window, in the window's raster order.
            mask = torch.zeros(64)
            mask[raster[:, :kept].reshape(-1)] = 1
            assert torch.equal(mask, io[f"keep_mask_budget_{b}"])
            assert torch.allclose(model(io["x"], io["t"], io["y"], budget=kept), io[f"out_budget_{b}"], **TOL), b
        null = model(io["x"], io["t"], io["y_null"], budget=8)
    assert model.null_class_id == 10
    assert torch.allclose(null, io["out_budget_0.5_ynull"], **TOL)
    saved = json.loads((out / "config.json").read_text())["converted_from"]
    assert saved["source"] == "authors-elit" and saved["constructor_kwargs"]["encoder_depth"] == 2
    assert model.layout()[0] == range(2) and len(model.layout()[2]) == 1


def test_authors_elit_activations(elit_fixture):
    _, model, io, _ = elit_fixture
    got, iface = {}, model.interface
    head, core, tail = model.layout()
    hooks = [model.backbone.blocks[head[-1]].register_forward_hook(lambda m, a, o: got.__setitem__("head", o)),
             model.backbone.blocks[core[-1]].register_forward_hook(lambda m, a, o: got.__setitem__("core", o)),
             model.backbone.blocks[tail[0]].register_forward_pre_hook(lambda m, a: got.__setitem__("write", a[0]))]
    read = iface.read_latents
    iface.read_latents = lambda *a: got.setdefault("read", read(*a))
    try:
        with torch.no_grad():
            model(io["x"], io["t"], io["y"], budget=8)
    finally:
        del iface.read_latents
        for h in hooks:
            h.remove()
    grid, window = model.config.grid, iface.window
    raster = group_tokens(torch.arange(64.0).view(1, 64, 1), grid, window)[0, :, :8, 0].reshape(-1)
    core_raster = got["core"][:, raster.argsort()]  # ours is group-major; theirs raster-ascending
    from elit.model.interface import ungroup_tokens
    read_raster = ungroup_tokens(got["read"][0], grid, window)
    for name, ours in (("head_out", got["head"]), ("read_latents", read_raster), ("core_out", core_raster),
                       ("write_out", got["write"])):
        assert torch.allclose(ours, io[f"act_budget_0.5_{name}"], **TOL), name


def test_authors_sit_baseline(elit_fixture, tmp_path):
    fx, _, io, _ = elit_fixture
    weights = load_file(str(fx / "weights.safetensors"))
    sit = {k: v for k, v in weights.items() if not k.startswith(("input_token_editor.", "output_token_editor."))}
    save_file(sit, str(tmp_path / "sit.safetensors"))
    out = tmp_path / "sit"
    # The ELIT config works for the baseline: the reference SiT ignores ELIT-only kwargs too.
    assert main(["convert", "--from", "authors-sit", "--weights", str(tmp_path / "sit.safetensors"),
                 "--config", str(fx / "config.json"), "--out", str(out)]) == 0
    model = elit.load_pretrained(out)
    assert model.budgets == []
    with torch.no_grad():
        assert torch.allclose(model(io["x"], io["t"], io["y"]), io["out_sit_baseline"], **TOL)
    with pytest.raises(ValueError, match="unexpected key.*input_token_editor.*use --from authors-elit"):
        convert_checkpoint("authors-sit", weights, config=str(fx / "config.json"))


def test_dit_outputs_and_cfg(fixtures_dir, tmp_path):
    fx = fixtures_dir / "dit-a"
    out = tmp_path / "dit"
    assert main(["convert", "--from", "dit", "--weights", str(fx / "weights.safetensors"),
                 "--config", str(fx / "config.json"), "--out", str(out)]) == 0
    model, io = elit.load_pretrained(out), load_file(str(fx / "io.safetensors"))
    assert model.config.backbone.learn_sigma and model.null_class_id == 10
    with torch.no_grad():
        t = io["t"] / 1000  # DiT takes integer steps; a converted DiT takes t = step / 1000
        assert torch.allclose(model(io["x"], t, io["y"]), io["out"], **TOL)
        assert torch.allclose(model(io["x"], t, io["y_null"]), io["out_ynull"], **TOL)
        # DiT.forward_with_cfg: first half duplicated, guidance on channels [0:3] only (their quirk).
        half = io["x_cfg"][:2]
        o = model(torch.cat([half, half]), io["t_cfg"] / 1000, io["y_cfg"])
        cond, uncond = o[:, :3].chunk(2)
        guided = uncond + 4.0 * (cond - uncond)
        cfg = torch.cat([torch.cat([guided, guided]), o[:, 3:]], dim=1)
    assert torch.allclose(cfg, io["out_cfg_4.0"], **TOL)


# ----------------------------------------------------------------------------- another configuration
OTHER = dict(input_size=24, patch_size=3, in_channels=3, hidden_size=48, decoder_hidden_size=48, depth=5,
             num_heads=3, num_classes=7, mlp_ratio=2.0, class_dropout_prob=0.1, qk_norm=False,
             encoder_depth=1, dit_encoder_depth=3, dit_decoder_depth=2, enable_elit=True, group_size=2,
             elit_max_mask_prob=0.5, elit_min_mask_prob=0.0)


def test_other_config_converts_and_runs_every_budget(tmp_path):
    state = reference_state(OTHER)
    model = convert_checkpoint("authors-elit", state, config={"constructor_kwargs": OTHER})
    assert [len(r) for r in model.layout()] == [1, 2, 2]  # head = encoder_depth, not dit_encoder_depth
    assert model.interface.window == (2, 2) and model.budgets == [2, 3, 4]  # trained: mask 0..0.5 of 4
    assert authors_budget_to_ours(0.5, model) == 2 and authors_budget_to_ours(48, model) == 3
    x, t, y = torch.randn(2, 3, 24, 24), torch.rand(2), torch.tensor([0, 6])
    with torch.no_grad():
        outs = {b: model(x, t, y, budget=b) for b in model.budgets}
    assert all(o.shape == (2, 3, 24, 24) and torch.isfinite(o).all() for o in outs.values())
    assert maxdiff(outs[2], outs[4]) > 1e-3  # the budget reaches the output
    with pytest.raises(ValueError, match="--min-budget 1"):
        authors_budget_to_ours(0.25, model)
    assert convert_checkpoint("authors-elit", state, config=OTHER, min_budget=1).budgets == [1, 2, 3, 4]


@pytest.mark.parametrize("change, pattern", [
    (dict(depth=6), r"missing key.*blocks\.5\."),
    (dict(hidden_size=64, decoder_hidden_size=64, num_heads=4),
     r"shape mismatch\(es\): blocks.0.adaLN_modulation.1.bias checkpoint \[288\] vs config \[384\]"),
    (dict(group_size=4), r"shape mismatch.*learned_query_embed checkpoint \[4, 48\] vs config \[16, 48\]"),
    (dict(num_classes=8), r"y_embedder.embedding_table.weight checkpoint \[8, 48\] vs config \[9, 48\]"),
    (dict(mlp_ratio=4.0), r"blocks.0.mlp.fc1.weight"),
])
def test_other_config_mismatches_are_refused(change, pattern):
    with pytest.raises(ValueError, match=pattern):
        convert_checkpoint("authors-elit", reference_state(OTHER), config=dict(OTHER, **change))


@pytest.mark.parametrize("change, option", [
    (dict(elit_read_depth=2), "elit_read_depth"), (dict(elit_write_depth=2), "elit_write_depth"),
    (dict(decoder_hidden_size=32), "decoder_hidden_size"), (dict(qk_norm=True), "qk_norm"),
    (dict(encoder_depth=3), "encoder_depth"), (dict(group_size=3), "group_size"),
    (dict(typo_option=1), "typo_option"), (dict(num_classes=0), "num_classes"),
])
def test_inexpressible_options_are_named(change, option):
    with pytest.raises(ValueError, match=option):
        convert_checkpoint("authors-elit", reference_state(OTHER), config=dict(OTHER, **change))


def test_bad_state_dicts():
    state = reference_state(OTHER)
    with pytest.raises(ValueError, match="unexpected key.*blocks.0.extra"):
        convert_checkpoint("authors-elit", dict(state, **{"blocks.0.extra": torch.zeros(1)}), config=OTHER)
    with pytest.raises(ValueError, match="pos_embed differs from the fixed 2-D sin-cos"):
        convert_checkpoint("authors-elit", dict(state, pos_embed=torch.randn_like(state["pos_embed"])), config=OTHER)
    dit = reference_state(dict(OTHER, learn_sigma=True), source="dit")
    with pytest.raises(ValueError, match="missing key.*input_token_editor.*no ELIT Read/Write weights"):
        convert_checkpoint("authors-elit", dit, config=OTHER)
    with pytest.raises(ValueError, match="not look like a SiT/DiT"):
        convert_checkpoint("authors-elit", {"encoder.weight": torch.zeros(2)}, config=OTHER)
    # REPA projectors are training-only: dropped with a note.
    repa = dict(state, **{"projectors.0.0.weight": torch.zeros(4, 48), "projectors.0.0.bias": torch.zeros(4)})
    model = convert_checkpoint("authors-elit", repa, config=dict(OTHER, enable_repa=True, z_dims=[4]))
    assert any("projectors" in n for n in model.conversion["notes"])
    # Older REPA checkpoints name the blocks after the head decoder_blocks.(i - encoder_depth).
    def legacy_name(key):
        parts = key.split(".")
        if parts[0] != "blocks" or parts[1] == "0":  # encoder_depth=1: block 0 keeps its name
            return key
        return ".".join(["decoder_blocks", str(int(parts[1]) - 1), *parts[2:]])
    legacy = {legacy_name(k): v for k, v in state.items()}
    assert any(k.startswith("decoder_blocks.3.") for k in legacy)
    renamed = convert_checkpoint("authors-elit", legacy, config=OTHER).state_dict()
    assert all(torch.equal(v, renamed[k]) for k, v in model.state_dict().items())


class _NotATensor:
    pass


def test_training_checkpoint_pickles(tmp_path):
    state = reference_state(OTHER)
    args = argparse.Namespace(model="ELIT-SiT-S/2", encoder_depth=1, elit_group_size=2, num_classes=7)
    noisy = {k: v + 1 for k, v in state.items()}
    torch.save({"model": noisy, "ema": state, "opt": {}, "args": args, "steps": 10}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="training args disagree.*model="):  # ELIT-SiT-S has depth 12
        convert_checkpoint("authors-elit", tmp_path / "ckpt.pt", config=OTHER)
    args.model = "custom"
    torch.save({"model": noisy, "ema": state, "opt": {}, "args": args, "steps": 10}, tmp_path / "ckpt.pt")
    model = convert_checkpoint("authors-elit", tmp_path / "ckpt.pt", config=OTHER)
    assert model.conversion["weights"]["entry"] == "ema"
    assert torch.equal(model.interface.latent_queries, state["input_token_editor.adapters.0.learned_query_embed"])
    args.encoder_depth = 2
    torch.save({"ema": state, "args": args}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="encoder_depth=2"):
        convert_checkpoint("authors-elit", tmp_path / "ckpt.pt", config=OTHER)
    torch.save({"ema": state, "hook": _NotATensor()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="weights_only=True.*refuses to unpickle arbitrary code"):
        convert_checkpoint("authors-elit", tmp_path / "code.pt", config=OTHER)


def test_cli_errors_write_nothing(tmp_path, capsys):
    state = reference_state(OTHER)
    torch.save({"ema": state, "hook": _NotATensor()}, tmp_path / "code.pt")
    (tmp_path / "cfg.json").write_text(json.dumps({"constructor_kwargs": OTHER}))
    out = tmp_path / "out"
    base = ["convert", "--from", "authors-elit", "--config", str(tmp_path / "cfg.json"), "--out", str(out)]
    assert main(base + ["--weights", str(tmp_path / "code.pt")]) == 2
    assert "arbitrary code" in capsys.readouterr().err
    assert main(base + ["--weights", str(tmp_path / "missing.pt")]) == 2
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    assert main(base + ["--weights", str(tmp_path / "junk.safetensors")]) == 2
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    save_file(state, str(tmp_path / "w.safetensors"))
    good = ["convert", "--from", "authors-elit", "--config", str(tmp_path / "cfg.json"),
            "--weights", str(tmp_path / "w.safetensors")]
    assert main(good + ["--out", str(keep)]) == 2
    assert "not an elit model folder" in capsys.readouterr().err and (keep / "notes.txt").exists()
    assert main(good + ["--out", str(out)]) == 0 and elit.load_pretrained(out).budgets == [2, 3, 4]
    # Issue 30: an existing model folder is replaced only with --overwrite (as elit sample's folders).
    before = (out / "model.safetensors").read_bytes()
    assert main(good + ["--out", str(out), "--min-budget", "3"]) == 2
    assert "already holds a model converted from authors-elit; pass --overwrite" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert main(good + ["--out", str(out), "--min-budget", "3", "--overwrite"]) == 0
    assert elit.load_pretrained(out).budgets == [3, 4]
    assert main(good + ["--out", str(keep), "--overwrite"]) == 2 and (keep / "notes.txt").exists()   # never foreign


def test_weights_that_are_not_a_checkpoint_or_hold_nan_are_named(tmp_path):
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        convert_checkpoint("authors-elit", tmp_path / "random.pt", config=OTHER)
    with pytest.raises(ValueError, match="is a folder"):
        convert_checkpoint("authors-elit", tmp_path, config=OTHER)
    state = reference_state(OTHER)
    state["blocks.0.attn.qkv.weight"][0, 0] = float("inf")
    torch.save({"ema": state}, tmp_path / "diverged.pt")
    with pytest.raises(ValueError, match=r"hold NaN/Inf \(1 tensors, e.g. blocks.0.attn.qkv.weight\)"):
        convert_checkpoint("authors-elit", tmp_path / "diverged.pt", config=OTHER)
    with pytest.raises(ValueError, match="use --from uvit"):
        convert_checkpoint("dit", state, preset="U-ViT-H/2")
    with pytest.raises(ValueError, match="use --from dit"):
        convert_checkpoint("uvit", state, preset="DiT-XL/2")


# ----------------------------------------------------------------------------- budgets and presets
def test_authors_budget_rule():
    class Fake:  # the helper needs only J, the grid and the valid budgets
        latents_per_group, budgets = 16, list(range(1, 17))
        config = type("C", (), {"grid": (16, 16)})()
    assert [authors_budget_to_ours(b, Fake) for b in (1.0, 0.6, 0.5, 0.25, 0.0625, 1, 144)] == [16, 9, 8, 4, 1, 16, 9]
    for bad in (0, 0.05, 300):
        with pytest.raises(ValueError):
            authors_budget_to_ours(bad, Fake)


def test_presets_follow_reference_defaults(capsys):
    def cfg(name, source):
        kw, _, _ = resolve_kwargs(source, preset=name)
        return model_config(source, kw)[0]
    xl = cfg("ELIT-SiT-XL/2", "authors-elit")
    assert (xl["depth"], xl["hidden_size"], xl["head_depth"], xl["tail_depth"]) == (28, 1152, 8, 4)  # 8-16-4
    assert xl["window"] == [4, 4] and xl["input_size"] == 32 and xl["num_classes"] == 1000
    assert xl["min_budget"] == 16 and xl["time_scale"] == 1.0  # train.py default: single budget (mask 0)
    mb512 = cfg("ELIT-SiT-XL/2-multibudget@512", "authors-elit")
    assert mb512["window"] == [8, 8] and mb512["input_size"] == 64 and mb512["min_budget"] == 4
    b = cfg("ELIT-SiT-B/2", "authors-elit")
    assert (b["head_depth"], b["depth"] - b["head_depth"] - b["tail_depth"], b["tail_depth"]) == (8, 2, 2)  # their B runs 8-2-2
    dit = cfg("DiT-XL/2@512", "dit")
    assert dit["learn_sigma"] and dit["time_scale"] == 1000 and dit["input_size"] == 64 and not dit["elit"]
    assert not cfg("SiT-XL/2", "authors-sit")["elit"]
    with pytest.raises(ValueError, match="use --from dit"):
        resolve_kwargs("authors-elit", preset="DiT-XL/2")
    assert main(["convert", "--list-presets"]) == 0
    assert "ELIT-SiT-XL/2-multibudget@512" in capsys.readouterr().out


def test_converted_dit_is_refused_by_the_rectified_flow_sampler(fixtures_dir):
    from elit.interop.convert import convert_checkpoint
    from elit.sampling import sample
    model = convert_checkpoint("dit", fixtures_dir / "dit-a" / "weights.safetensors",
                               config=fixtures_dir / "dit-a" / "config.json")
    assert model.config.backbone.prediction == "epsilon"
    with pytest.raises(ValueError, match="not a rectified-flow velocity"):
        sample(model, seeds=[0], steps=2)
