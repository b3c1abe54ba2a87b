"""diffusers' SD3Transformer2DModel (SD3 and SD3.5's dual attention) as an ELIT backbone, under the
shared backbone tests."""
import pytest
import torch
from diffusers import SD3Transformer2DModel

from mmdit_suite import TEXT, MMDiTSuite
from elit.interop.diffusers import make_elastic
from elit.model import TextCondition
from elit.model.backbones import CoreLayout
from elit.model.positions import LatentPositions


class TestSD3(MMDiTSuite):
    masked = False
    kwargs_name = "joint_attention_kwargs"

    def transformer(self):
        # diffusers' tiny test geometry at 16x16 latents, patch 2; block 1 has SD3.5's dual attention
        return SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=3, num_layers=4, attention_head_dim=8,
                                     num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=16,
                                     pooled_projection_dim=24, out_channels=3, pos_embed_max_size=16,
                                     dual_attention_layers=(1,))

    def condition(self, B, g):
        return TextCondition(torch.randn(B, TEXT, 16, generator=g), pooled=torch.randn(B, 24, generator=g))

    def diffusers_call(self, x, t, y):
        return dict(hidden_states=x, encoder_hidden_states=y.embeds, pooled_projections=y.pooled, timestep=t * 1000)

    def test_core_latents_carry_their_tokens_sincos_position(self):
        model = self.model()
        x, t, y = self.inputs()
        h, text, ctx = model.backbone.embed(x, t, y)
        table = model.backbone.transformer.pos_embed.cropped_pos_embed(16, 16)[0]
        for j in (2, 16):
            index = model.interface.latent_token_index(model.config.grid, j)
            layout = CoreLayout(4, j, LatentPositions(token_index=index))
            added, _ = model.backbone.enter_core(torch.zeros(2, 4 * j, 32), text, model.backbone.core_context(ctx, layout))
            assert torch.equal(added[0], table[index]) and torch.equal(added[1], table[index])
        assert sorted(index.tolist()) == list(range(64))   # full budget: exactly the image tokens' positions

    def test_skip_layers_and_refused_inputs(self):
        tr = self.transformer().eval()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        plain = make_elastic(tr, elit=False, text_tokens=TEXT)
        with torch.no_grad():
            assert torch.equal(plain(**call, skip_layers=[2]).sample, tr(**call, skip_layers=[2]).sample)
        with pytest.raises(ValueError, match="ControlNet"):
            plain(**call, block_controlnet_hidden_states=[x])
        with pytest.raises(ValueError, match="ip_adapter"):
            plain(**call, joint_attention_kwargs={"ip_adapter_image_embeds": [x]})
        model = self.model()
        masked = TextCondition(y.embeds, torch.tensor([[True] * TEXT, [True] * (TEXT - 1) + [False]]), y.pooled)
        with pytest.raises(ValueError, match="no text mask"):
            model(x, t, masked)
