"""diffusers' FluxTransformer2DModel (double- then single-stream blocks, the guidance embedding of the
distilled models) as an ELIT backbone, under the shared backbone tests."""
import torch
from diffusers import FluxTransformer2DModel

from mmdit_suite import TEXT, MMDiTSuite
from elit.interop.diffusers import make_elastic
from elit.model import TextCondition
from elit.model.backbones.flux import image_ids
from elit.model.backbones.qwenimage import pack, unpack


class TestFlux(MMDiTSuite):
    masked = False
    kwargs_name = "joint_attention_kwargs"

    def transformer(self):
        # 2 double-stream + 2 single-stream blocks of width 32, guidance-distilled (as FLUX.1-dev)
        return FluxTransformer2DModel(patch_size=1, in_channels=12, out_channels=12, num_layers=2, num_single_layers=2,
                                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                      pooled_projection_dim=24, guidance_embeds=True, axes_dims_rope=(4, 6, 6))

    def condition(self, B, g):
        return TextCondition(torch.randn(B, TEXT, 16, generator=g), pooled=torch.randn(B, 24, generator=g))

    def diffusers_call(self, x, t, y):
        return dict(hidden_states=pack(x), encoder_hidden_states=y.embeds, pooled_projections=y.pooled, timestep=t,
                    img_ids=image_ids((8, 8)), txt_ids=torch.zeros(TEXT, 3), guidance=torch.full((x.shape[0],), 3.5))

    def to_image(self, out):
        return unpack(out, (8, 8)) if out.dim() == 3 else out

    def test_the_core_spans_both_block_kinds_and_latents_take_their_tokens_angles(self):
        """head 1 (double), core = double block 1 + single block 2, tail 1 (single): every block
        kind sees [text ; kept latents]; each latent's rotary rows are its token's."""
        model = self.model()
        assert model.config.backbone.double_blocks == 2 and len(model.layout()[1]) == 2
        x, t, y = self.inputs()
        _, _, ctx = model.backbone.embed(x, t, y)
        positions = model.interface.core_positions(ctx.grid, 4)
        from elit.model.backbones import CoreLayout
        core = model.backbone.core_context(ctx, CoreLayout(4, 4, positions))
        for table, full in zip(core.rope, ctx.rope):
            assert torch.equal(table[:TEXT], full[:TEXT])
            assert torch.equal(table[TEXT:], full[TEXT:][positions.token_index])
        with torch.no_grad():
            assert model(x, t, y, budget=4).shape == x.shape

    def test_the_distilled_guidance_reaches_the_model(self):
        tr = self.transformer().eval()
        x, t, y = self.inputs()
        call = self.diffusers_call(x, t, y)
        elastic = make_elastic(tr, elit=False, input_size=16, text_tokens=TEXT)
        with torch.no_grad():
            a = elastic(**call, return_dict=False)[0]
            b = elastic(**{**call, "guidance": torch.full((2,), 7.0)}, return_dict=False)[0]
        assert not torch.equal(a, b)
