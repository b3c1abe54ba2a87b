"""The video DiT ((B, C, T, H, W) clips, 3-D patches, 3-axis RoPE, 3-D windows) under the shared
backbone tests."""
import torch

import elit
from backbone_suite import BackboneSuite


class TestVideoDiT(BackboneSuite):
    preset, plain_preset = "ELIT-VideoDiT-S/2", "VideoDiT-S/2"
    # 4 frames of 16x16, patch 1x2x2 -> a 4x8x8 token grid; windows 2x2x4 -> 16 groups of J = 16
    tiny = dict(BackboneSuite.tiny, frames=4, window=[2, 2, 4], depth=4, head_depth=1, tail_depth=1)

    def test_windows_span_time(self):
        """Tokens of one token-frame reach only the groups whose windows hold that frame."""
        model = self.model()
        iface, D = model.interface, 32
        g = torch.Generator().manual_seed(5)
        tokens, c = torch.randn(1, 4, 8, 8, D, generator=g), torch.randn(1, D, generator=g)
        changed = tokens.clone()
        changed[:, 3] += torch.randn(1, 8, 8, D, generator=g)      # token-frame 3: the second time window
        with torch.no_grad():
            a, _ = iface.read_latents(tokens.view(1, 256, D), (4, 8, 8), c, kept=16)
            b, _ = iface.read_latents(changed.view(1, 256, D), (4, 8, 8), c, kept=16)
        diff = (b - a).abs().amax(dim=(0, 2, 3))     # groups: raster over (2 time, 4 row, 2 col) windows
        assert torch.equal(diff[:8], torch.zeros(8)) and diff[8:].min() > 1e-3

    def test_the_issue_example_and_paper_geometry(self):
        small = elit.create_model("ELIT-VideoDiT-S/2", input_size=16, frames=4, in_channels=1, num_classes=10,
                                  hidden_size=64, num_heads=4, window=[2, 4, 4])
        assert small.config.num_groups == 8 and small.budgets[-1] == 32 and small.sample_shape() == (1, 4, 16, 16)
        with torch.device("meta"):
            xl = elit.create_model("ELIT-VideoDiT-XL/2")      # 8 latent frames of 32x32: 8x16x16 tokens
        assert xl.config.grid == (8, 16, 16) and xl.config.window == (2, 4, 4)
        assert xl.config.num_groups == 64 and xl.budgets[-1] == 32
