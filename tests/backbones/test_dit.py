"""DiT (adaLN-Zero blocks, QK-norm, RoPE) under the shared backbone tests."""
from backbone_suite import BackboneSuite


class TestDiT(BackboneSuite):
    preset, plain_preset = "ELIT-DiT-S/2", "DiT-S/2"
    tiny = dict(BackboneSuite.tiny, depth=4, head_depth=1, tail_depth=1)


class TestDiTCompatibilityForm(BackboneSuite):
    """The authors'-code form: sin-cos positions, learned latent table, 7-chunk Read, Write without
    norms that also sees the dropped latents (how converted ELIT-SiT checkpoints run)."""
    preset, plain_preset = "ELIT-DiT-S/2", "DiT-S/2"
    tiny = dict(BackboneSuite.tiny, depth=4, head_depth=1, tail_depth=1, rope=False, qk_norm=False,
                pos_embed="sincos", time_scale=1.0, read_adaln_chunks=7, write_norm=False,
                window_pos_in_residual=True, latent_pos="learned", write_sees_dropped=True)

    def test_prefix_property(self):
        """With the Write seeing dropped latents (their post-Read values), rows >= j do reach the
        output: the compatibility form gives up the prefix property, as the authors' code does."""
        import torch
        model = self.model()
        x, t, y = self.inputs()
        with torch.no_grad():
            ref = model(x, t, y, budget=5)
            model.interface.latent_queries[5:] += 1.0
            assert (model(x, t, y, budget=5) - ref).abs().max() > 1e-4

    def test_zero_init_write_passes_the_head_output_to_the_tail(self):
        """Here the within-window positions go into the residual stream (as the authors' code has
        it), so an untrained Write passes head output + Read and Write positions to the tail."""
        import torch
        from elit.model.interface import group_tokens, ungroup_tokens
        model = self.model()
        model.interface.write.zero_init()
        x, t, y = self.inputs()
        seen, core = [], model._core
        model._core = lambda h, *a: seen.append((h, core(h, *a)[0])) or core(h, *a)
        with torch.no_grad():
            model(x, t, y, budget=3)
        h_in, h_out = seen[0]
        iface = model.interface
        grid, window = (8, 8), iface.window
        expected = ungroup_tokens(group_tokens(h_in, grid, window) + iface.read_pos + iface.write_pos, grid, window)
        assert torch.allclose(h_out, expected, atol=1e-6)
