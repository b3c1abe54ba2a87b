"""DDIM for converted discrete-VP epsilon models, on the facebookresearch DiT fixture (dit-a)."""
import numpy as np
import pytest
import torch

from elit.flow.vp import VPSchedule
from elit.interop.convert import convert_checkpoint
from elit.sampling import initial_noise, sample


@pytest.fixture(scope="module")
def dit(fixtures_dir=None):
    from conftest import TESTS
    fx = TESTS / "fixtures" / "dit-a"
    return convert_checkpoint("dit", fx / "weights.safetensors", config=fx / "config.json")


def test_ddim_is_deterministic_per_seed(dit):
    a = sample(dit, [0, 1, 2], steps=4, sampler="ddim", batch_size=3)
    assert torch.equal(a, sample(dit, [0, 1, 2], steps=4, sampler="ddim", batch_size=3))
    # batch size changes only float summation order; the first step's x0 divides by
    # sqrt(abar_999) = 0.0064, which amplifies that noise ~150x (here to ~1e-4 of the values)
    torch.testing.assert_close(a[1:2], sample(dit, [1], steps=4, sampler="ddim"), rtol=1e-3, atol=1e-3)
    assert a.shape == (3, 4, 16, 16) and torch.isfinite(a).all() and not torch.allclose(a[0], a[1])


def test_ddim_matches_a_hand_computed_two_step_update_with_cfg(dit):
    """Two steps (VP steps 999 and 500 = round(0.5 * 999)), CFG lambda = 1.5 on the noise
    predictions, DiT's linear betas written out here independently of elit.flow.vp."""
    lam = 1.5
    out = sample(dit, [7], labels=[3], steps=2, sampler="ddim", guidance="cfg", scale=lam)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    x = initial_noise([7], (4, 16, 16))
    y, null = torch.tensor([3]), torch.tensor([10])

    def eps(x, step):
        with torch.no_grad():
            t = torch.full((1,), step / 1000)
            cond, uncond = dit(x, t, y)[:, :4], dit(x, t, null)[:, :4]
        return cond + lam * (cond - uncond)

    for step, prev in ((999, abar[500]), (500, 1.0)):
        e = eps(x, step)
        x0 = (x - np.sqrt(1 - abar[step]) * e) / np.sqrt(abar[step])
        x = np.sqrt(prev) * x0 + np.sqrt(1 - prev) * e
    # The sampler runs cond and uncond as one batch of 2 (float summation order differs); the fixture's
    # random weights give samples up to |x| ~ 1e3, so 2e-3 is ~1e-6 of their scale
    assert out.abs().max() > 10
    torch.testing.assert_close(out, x.float(), rtol=0, atol=2e-3)
    # the same run at the steps of a 3-step grid ends elsewhere, far beyond that tolerance
    assert (out - sample(dit, [7], labels=[3], steps=3, sampler="ddim", guidance="cfg", scale=lam)).abs().max() > 0.1


def test_samplers_refuse_the_wrong_kind_of_model(dit):
    import elit
    with pytest.raises(ValueError, match="sampler='ddim'"):
        sample(dit, [0], steps=2)
    velocity = elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=2, num_heads=2, head_depth=0, tail_depth=0,
                                 input_size=8, in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match="epsilon"):
        sample(velocity, [0], steps=2, sampler="ddim")
    with pytest.raises(ValueError, match="noise schedule"):
        sample(dit, [0], steps=2, sampler="ddim", noise_schedule="cosine")


def test_vp_schedules_match_their_definitions():
    lin, sd = VPSchedule("linear"), VPSchedule("scaled-linear")
    assert lin.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert sd.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085)
    assert lin.alphas_cumprod[-1].item() == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
