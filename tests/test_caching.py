"""TeaCache wrapper: threshold 0 is exact, skips reuse per-stream outputs, calibrate's table."""
import pytest
import torch

from elit.sampling.cache import TeaCache
from elit.sampling.calibrate import calibrate, format_table
from elit.model import ELITModel
from elit.sampling import sample
from test_sampling import CallRecorder, one_thread, tiny_model  # noqa: F401  (fixture re-used)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("options", [dict(), dict(guidance="ccfg", scale=0.5), dict(sampler="heun")])
def test_threshold_zero_equals_uncached_run(model, options):
    cached = TeaCache(model, threshold=0.0)
    plain = sample(model, range(3), steps=4, batch_size=2, **options)
    assert torch.equal(sample(cached, range(3), steps=4, batch_size=2, **options), plain)
    assert cached.skips == 0 and cached.calls > 0
    assert ELITModel.forward is type(model).forward  # the model itself was never patched


def test_large_threshold_skips_but_keeps_guidance_streams_apart(model):
    recorder = CallRecorder(model)
    cached = TeaCache(recorder, threshold=1e9)
    out = sample(cached, [0, 1], steps=5, budget=4, guidance="ccfg", scale=0.5)
    # Each stream (main budget 4 with labels, weak budget 1 with the null class) runs once per trajectory.
    assert sorted(b for _, b, _ in recorder.calls) == [1, 4]
    assert cached.calls == 2 and cached.skips == 8
    assert torch.isfinite(out).all()
    # With every output reused, the ODE moves along the first velocity: x0 = x1 - v(x1, 1).
    first = sample(model, [0, 1], steps=1, budget=4, guidance="ccfg", scale=0.5)
    torch.testing.assert_close(out, first, rtol=0, atol=1e-5)


def test_skips_follow_the_accumulated_embedding_change(model):
    # A threshold between the smallest and largest per-step change must skip some calls, not all.
    recorder = CallRecorder(model)
    cached = TeaCache(recorder, threshold=0.0)
    embeds = [model.backbone.t_embedder(torch.tensor([t])) for t in (1.0, 0.9)]
    rel = ((embeds[1] - embeds[0]).abs().mean() / embeds[0].abs().mean()).item()
    cached.threshold = rel * 2.5
    sample(cached, [0], steps=10)
    assert 0 < cached.skips < 9 and cached.calls + cached.skips == 10
    assert len(recorder.calls) == cached.calls


def test_calibrate_table(model):
    rows = calibrate(model, [0, 1], [0.0, 1e9], steps=3)
    assert [r["threshold"] for r in rows] == [0.0, 1e9]
    assert rows[0]["rmse"] == 0.0 and rows[0]["skips"] == 0
    assert rows[1]["skips"] == 2 and rows[1]["rmse"] > 0
    assert "threshold" in format_table(rows)


def test_bad_threshold(model):
    with pytest.raises(ValueError, match="threshold"):
        TeaCache(model, threshold=-1)
