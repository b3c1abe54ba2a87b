"""HDiT (an hourglass of DiT blocks: a 2x2 merge to double width and a split back with a skip) under
the shared backbone tests, with the hourglass inside the latent core."""
import pytest
import torch

import elit
from backbone_suite import BackboneSuite
from elit.model.backbones.hdit import merged_coordinates


class TestHDiT(BackboneSuite):
    preset, plain_preset = "ELIT-HDiT-S/2", "HDiT-S/2"
    # 6 blocks: Read after block 1, merge before 2, split before 4, Write before 5
    tiny = dict(BackboneSuite.tiny, depth=6, head_depth=1, tail_depth=1, merge_at=2, split_at=4)

    @pytest.mark.parametrize("j", [1, 2, 3, 4, 5, 7, 8, 13])
    def test_prefix_property_at_budgets_not_divisible_by_4(self, j):
        model = self.model()
        x, t, y = self.inputs()
        queries = model.interface.latent_queries
        with torch.no_grad():
            ref = model(x, t, y, budget=j)
            queries[j:] += 10 * torch.randn_like(queries[j:])
            assert torch.equal(model(x, t, y, budget=j), ref)
            queries[j - 1] += 1.0
            assert (model(x, t, y, budget=j) - ref).abs().max() > 1e-4

    def test_the_bottleneck_is_wider_and_shorter(self):
        model = self.model()
        widths = [b.attn.qkv.in_features for b in model.backbone.blocks]
        assert widths == [32, 32, 64, 64, 32, 32]
        seen = {}
        hooks = [model.backbone.blocks[i].register_forward_pre_hook(
            lambda m, a, i=i: seen.__setitem__(i, tuple(a[0].shape))) for i in range(6)]
        with torch.no_grad():
            model(*self.inputs(), budget=5)                 # 4 groups x 5 latents -> 4 x 2 merged
        for h in hooks:
            h.remove()
        assert seen == {0: (2, 64, 32), 1: (2, 20, 32), 2: (2, 8, 64), 3: (2, 8, 64), 4: (2, 20, 32), 5: (2, 64, 32)}

    def test_hourglass_must_lie_inside_the_core(self):
        with pytest.raises(ValueError, match="inside the"):
            self.config(depth=6, head_depth=3, tail_depth=1, merge_at=2, split_at=4)
        with pytest.raises(ValueError, match="inside the"):
            self.config(depth=6, head_depth=1, tail_depth=2, merge_at=2, split_at=4)

    def test_merged_latents_sit_at_the_mean_of_their_real_slots(self):
        coords = torch.tensor([[s, g, 0] for g in range(2) for s in range(5)])   # 2 groups x 5 slots
        merged = merged_coordinates(coords, groups=2, kept=5)
        assert merged.tolist() == [[1.5, 0, 0], [4.0, 0, 0], [1.5, 1, 0], [4.0, 1, 0]]

    def test_paper_sizes(self):
        with torch.device("meta"):
            xl, elit_xl = elit.create_model("HDiT-XL/2"), elit.create_model("ELIT-HDiT-XL/2")
        assert xl.config.backbone.levels == (8, 20) and [len(r) for r in elit_xl.layout()] == [4, 20, 4]
        params = sum(p.numel() for p in xl.parameters())
        assert 1.3e9 < params < 1.45e9        # the paper: 1.4B parameters at XL
