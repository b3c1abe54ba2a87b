"""diffusers' WanTransformer3DModel (text-to-video: self-attention on video tokens, cross-attention to
the text, 3-D windows) as an ELIT backbone, under the shared MM-DiT tests. The tiny input is a clip of
2 latent frames of 8x16 (patch 1x2x2: a 2x4x8 token grid); windows of 2x2x4 tokens give the suite's
4 groups of J = 16."""
import dataclasses

import pytest
import torch
from diffusers import WanTransformer3DModel

from backbone_suite import randomize_
from mmdit_suite import TEXT, MMDiTSuite
from elit.interop.diffusers import elastic_config, make_elastic
from elit.model import TextCondition
from elit.model.backbones import CoreLayout, WanArgs


class TestWan(MMDiTSuite):
    masked = False                 # no text mask: a TextCondition's mask zeroes the masked embeddings
    core_is_latents_only = True    # the text is a constant of the forward, not a stream through the core
    window = (2, 2, 4)
    geometry = dict(input_size=8, width=16, frames=2, text_tokens=TEXT)

    def transformer(self):
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=3,
                                     out_channels=3, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=4,
                                     rope_max_seq_len=32)

    def condition(self, B, g):
        return TextCondition(torch.randn(B, TEXT, 16, generator=g))

    def inputs(self, B=2, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(B, 3, 2, 8, 16, generator=g), torch.rand(B, generator=g), self.condition(B, g)

    def diffusers_call(self, x, t, y):
        return dict(hidden_states=x, timestep=t * 1000, encoder_hidden_states=y.embeds)

    # ------------------------------------------------------------------ the suite's 2-D test, in 3-D
    def test_latents_sit_on_spread_out_tokens_of_their_window(self):
        """latent_pos="tokens" with 3-D windows: at budget j each group's latents take the first j
        tokens of coarse_to_fine_order(2, 2, 4); at j = 4 one per frame and row pair, spread over the
        columns; at full budget exactly every token, and every budget keeps a prefix."""
        model = self.model()
        iface, grid = model.interface, model.config.grid
        assert grid == (2, 4, 8)
        full = iface.latent_token_index(grid, 16)
        assert sorted(full.tolist()) == list(range(64))
        frame, row, col = full // 32, full // 8 % 4, full % 8
        first4 = torch.stack([frame, row % 2, col % 4], -1).view(4, 16, 3)[:, :4]
        assert all(sorted(map(tuple, g.tolist())) == [(0, 0, 0), (0, 0, 2), (1, 0, 0), (1, 0, 2)] for g in first4)
        for j in (1, 4, 7):
            assert torch.equal(iface.latent_token_index(grid, j).view(4, j), full.view(4, 16)[:, :j])

    # ------------------------------------------------------------------ Wan only
    def test_core_latents_take_their_tokens_rotary_rows(self):
        model = self.model()
        x, t, y = self.inputs()
        _, _, ctx = model.backbone.embed(x, t, y)
        positions = model.interface.core_positions(ctx.grid, 5)
        core = model.backbone.core_context(ctx, CoreLayout(4, 5, positions, window=self.window))
        for table, full in zip(core.rope, ctx.rope):
            assert table.shape == (1, 20, 1, 16) and torch.equal(table, full[:, positions.token_index])
        learned = self.model(latent_pos="learned")
        core = learned.backbone.core_context(ctx, CoreLayout(4, 5, learned.interface.core_positions(ctx.grid, 5),
                                                             window=self.window))
        assert core.rope is None                      # no rotation for latents without a token
        with pytest.raises(ValueError, match="slot"):
            self.config(latent_pos="rope")

    def test_per_token_timesteps_pool_per_window_in_the_core(self):
        """Wan 2.2 TI2V passes one timestep per token. With the interface off that equals diffusers
        exactly; elastic, equal timesteps give the per-clip answer, and the core's modulation is each
        window's mean (so the first frame's window differs from the rest, and no budget changes it)."""
        tr = randomize_(self.transformer()).eval()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        per_token = torch.rand(2, 64, generator=torch.Generator().manual_seed(3)) * 1000
        with torch.no_grad():
            plain = make_elastic(tr, elit=False, **self.geometry)
            ref = tr(**{**call, "timestep": per_token}, return_dict=False)[0]
            assert torch.equal(plain(**{**call, "timestep": per_token}, return_dict=False)[0], ref)
            elastic = make_elastic(tr, head_depth=1, tail_depth=1, window=self.window, **self.geometry)
            expanded = (t * 1000)[:, None].expand(2, 64)
            for b in (3, 16):
                a = elastic(**call, budget=b).sample
                torch.testing.assert_close(elastic(**{**call, "timestep": expanded}, budget=b).sample, a,
                                           rtol=1e-5, atol=1e-5)
            backbone = elastic.model.backbone
            _, _, ctx = backbone.embed_call(**{**call, "timestep": per_token})
            for kept in (2, 9):
                core = backbone.core_context(ctx, CoreLayout(4, kept, window=self.window))
                assert core.modulation.shape == (2, 4 * kept, 6, 32)
                members = torch.arange(64).view(2, 2, 2, 2, 4).permute(1, 3, 0, 2, 4).reshape(4, 16)   # groups (h, w)
                means = torch.stack([ctx.modulation[:, m].mean(1) for m in members], 1)
                torch.testing.assert_close(core.modulation, means.repeat_interleave(kept, 1))
            with pytest.raises(ValueError, match="one column per video token"):
                elastic(**{**call, "timestep": per_token[:, :10]})

    def test_the_text_mask_zeroes_the_masked_embeddings(self):
        model = self.model()
        x, t, y = self.inputs()
        mask = torch.ones(2, TEXT, dtype=torch.bool)
        mask[0, 3:] = False
        zeroed = y.embeds.clone()
        zeroed[0, 3:] = 0
        with torch.no_grad():
            assert torch.equal(model(x, t, TextCondition(y.embeds, mask), budget=4),
                               model(x, t, TextCondition(zeroed), budget=4))
            null = model.null_condition(y)
            assert torch.equal(model(x, t, null, budget=4), model(x, t, TextCondition(torch.zeros_like(y.embeds)), budget=4))

    def test_refusals_name_what_is_unsupported(self):
        tr = self.transformer()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        with pytest.raises(ValueError, match="image conditioning"):
            make_elastic(tr, elit=False, **self.geometry)(**call, encoder_hidden_states_image=torch.zeros(2, 4, 8))
        with pytest.raises(ValueError, match="pooled"):
            self.model()(x, t, TextCondition(y.embeds, pooled=torch.zeros(2, 4)))
        i2v = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=3,
                                    out_channels=3, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=2, image_dim=8,
                                    added_kv_proj_dim=32)
        with pytest.raises(ValueError, match="I2V"):
            make_elastic(i2v)
        with pytest.raises(ValueError, match="frames, width do not apply"):
            from diffusers import SD3Transformer2DModel
            elastic_config(SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=3, num_layers=1,
                                                 attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                                                 joint_attention_dim=16, pooled_projection_dim=8, out_channels=3),
                           frames=2, width=16)

    def test_wan_480p_geometry_and_its_default_window(self):
        """The defaults are Wan2.1-T2V-14B at 480p, 81 frames: 21 x 30 x 52 tokens; make_elastic's
        defaults (5 + 5 of 40 blocks, windows dividing the grid) build without weights."""
        args = WanArgs()
        assert args.grid == (21, 30, 52) and args.input_shape() == (16, 21, 60, 104)
        assert args.default_window() == (1, 6, 13)
        with torch.device("meta"):
            tr = WanTransformer3DModel()
        cfg = elastic_config(tr)
        assert cfg.split.head == cfg.split.tail == 5 and cfg.window == (1, 6, 13) and cfg.num_groups == 420
        assert dataclasses.replace(cfg.backbone) == WanArgs()
