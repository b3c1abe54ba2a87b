"""diffusers' QwenImageTransformer2DModel as an ELIT backbone, under the shared backbone tests."""
import pytest
import torch
from diffusers import QwenImageTransformer2DModel

from mmdit_suite import TEXT, MMDiTSuite
from elit.interop.diffusers import make_elastic
from elit.model import TextCondition
from elit.model.backbones.qwenimage import pack, unpack


class TestQwenImage(MMDiTSuite):
    def transformer(self):
        # diffusers' own tiny test geometry, 3 latent channels (12 packed), 4 blocks of width 32
        return QwenImageTransformer2DModel(patch_size=2, in_channels=12, out_channels=3, num_layers=4,
                                           attention_head_dim=8, num_attention_heads=4, joint_attention_dim=16,
                                           axes_dims_rope=(2, 2, 4))

    def condition(self, B, g):
        mask = torch.ones(B, TEXT, dtype=torch.bool)
        mask[0, 4:] = False                      # the first prompt is shorter: padding masked out
        return TextCondition(torch.randn(B, TEXT, 16, generator=g), mask)

    def diffusers_call(self, x, t, y):
        return dict(hidden_states=pack(x), encoder_hidden_states=y.embeds, encoder_hidden_states_mask=y.mask.long(),
                    timestep=t, img_shapes=[[(1, 8, 8)]] * x.shape[0])

    def to_image(self, out):
        return unpack(out, (8, 8)) if out.dim() == 3 else out

    def test_core_latents_rotate_with_their_tokens_msrope_angles(self):
        """In the core, latent (g, s) carries exactly the MSRoPE angles of its token; at full budget
        the latents' angles are a permutation of the image tokens' angles."""
        model = self.model()
        x, t, y = self.inputs()
        head, core, _ = model.layout()
        seen = {}

        def record(name):
            def hook(module, args, kwargs):
                seen[name] = kwargs["image_rotary_emb"][0]
            return hook
        hooks = [model.backbone.blocks[head[0]].register_forward_pre_hook(record("head"), with_kwargs=True),
                 model.backbone.blocks[core[0]].register_forward_pre_hook(record("core"), with_kwargs=True)]
        with torch.no_grad():
            for j in (3, 16):
                model(x, t, y, budget=j)
                index = model.interface.latent_token_index(model.config.grid, j)
                assert torch.equal(seen["core"], seen["head"][index])
        for h in hooks:
            h.remove()
        assert sorted(index.tolist()) == list(range(64))

    def test_rope_fallback_uses_slot_and_group_coordinates(self):
        """latent_pos="rope": MSRoPE at (slot, group row, group col) on (frame, row, col)."""
        model = self.model(latent_pos="rope", latents_per_group=20)   # more latents than tokens per window
        x, t, y = self.inputs()
        assert model.budgets[-1] == 20
        with torch.no_grad():
            assert torch.isfinite(model(x, t, y, budget=20)).all()
        coords = model.interface.latent_coordinates(model.config.grid, 2)
        freqs = model.backbone.axis_freqs(coords, "cpu")
        assert freqs.shape == (4 * 2, 4) and not torch.equal(freqs[0], freqs[1])
        with pytest.raises(ValueError, match="cannot exceed"):
            self.config(latents_per_group=20)          # "tokens" needs J <= tokens per window

    def test_pipeline_features_the_first_version_refuses(self):
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        elastic = make_elastic(self.transformer(), head_depth=1, tail_depth=1, window=(4, 4), input_size=16)
        for extra, match in ((dict(controlnet_block_samples=[x]), "ControlNet"),
                             (dict(guidance=torch.ones(2)), "guidance"),
                             (dict(img_shapes=[[(1, 8, 8), (1, 8, 8)]] * 2), "one image per sample")):
            with pytest.raises(ValueError, match=match):
                elastic(**{**call, **extra})
        for option, match in (("zero_cond_t", "modulation index"), ("use_layer3d_rope", "3-D RoPE")):
            tr = QwenImageTransformer2DModel(patch_size=2, in_channels=12, out_channels=3, num_layers=2,
                                             attention_head_dim=8, num_attention_heads=4, joint_attention_dim=16,
                                             axes_dims_rope=(2, 2, 4), **{option: True})
            with pytest.raises(ValueError, match=match):
                make_elastic(tr, window=(4, 4), input_size=16)
