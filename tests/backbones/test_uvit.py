"""U-ViT in the paper's form (DiT blocks + long skips) under the shared backbone tests."""
import pytest
import torch

import elit
from backbone_suite import BackboneSuite


class TestUViT(BackboneSuite):
    preset, plain_preset = "ELIT-U-ViT-S/2", "U-ViT-S/2"
    tiny = dict(BackboneSuite.tiny, depth=4, head_depth=1, tail_depth=1)   # skips 0<->3 spatial, 1<->2 latent

    def test_skips_may_not_cross_the_interface(self):
        with pytest.raises(ValueError, match="equal head and tail"):
            self.config(depth=6, head_depth=1, tail_depth=2)

    def test_skips_carry_information(self):
        """The skip merges are on the data path: changing one moves the output."""
        model = self.model()
        x, t, y = self.inputs()
        with torch.no_grad():
            ref = model(x, t, y, budget=4)
            w = model.backbone.skip_linears["3"].weight
            w[:, 32:] += 0.5 * torch.randn_like(w[:, 32:])   # the half that reads the skip
            assert (model(x, t, y, budget=4) - ref).abs().max() > 1e-3

    def test_paper_layout(self):
        with torch.device("meta"):
            xl = elit.create_model("ELIT-U-ViT-XL/2")
        assert [len(r) for r in xl.layout()] == [4, 20, 4] and xl.config.backbone.hidden_size == 1152
