"""Samplers, guidance and their FLOP counts on a tiny randomly initialised ELIT model."""
import pytest
import torch

import elit
from elit.cost import analytic_gflops
from elit.sampling import initial_noise, plan_run, sample, sampling_gflops
from elit.sampling.schedules import BudgetSchedule, step_budgets, time_grid


def tiny_model(num_classes=10):
    model = elit.create_model("ELIT-DiT-S/2", hidden_size=64, depth=4, num_heads=4, head_depth=1, tail_depth=1,
                              in_channels=1, num_classes=num_classes, input_size=16).eval()
    # A fresh model has zero output layers (v = 0); random weights make every pass matter.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run faster on one thread, and the machine is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


class CallRecorder:
    """Wraps a model with its call signature and records (batch size, budget, t) of each call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, x, t, y=None, budget=None):
        self.calls.append((x.shape[0], self.model.resolve_budget(budget), float(t[0])))
        return self.model(x, t, y, budget=budget)


def test_deterministic_per_seed_and_independent_of_batch_size(model):
    a = sample(model, range(5), steps=3, budget=2, batch_size=5)
    b = sample(model, range(5), steps=3, budget=2, batch_size=2)
    c = sample(model, [3, 4], steps=3, budget=2, batch_size=1)
    assert torch.equal(a, sample(model, range(5), steps=3, budget=2, batch_size=5))
    # Equal up to the summation order of batched matmuls.
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a[3:], c, rtol=0, atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different seeds, different images


def test_initial_noise_comes_from_each_seed():
    noise = initial_noise([7, 9], (1, 4, 4))
    assert torch.equal(noise[1], torch.randn((1, 4, 4), generator=torch.Generator().manual_seed(9)))


def test_one_euler_step_follows_each_guidance_formula(model):
    seeds, lam, J, Jw = [0, 1], 0.7, 4, 2
    x = initial_noise(seeds, (1, 16, 16))
    y = torch.tensor([0, 1])
    null = torch.full_like(y, model.null_class_id)
    t = torch.ones(2)
    with torch.no_grad():
        strong = model(x, t, y, budget=J)
        weak = {"cfg": model(x, t, null, budget=J), "ccfg": model(x, t, null, budget=Jw),
                "ag": model(x, t, y, budget=Jw)}
    for mode, weak_v in weak.items():
        v = (1 + lam) * strong - lam * weak_v
        got = sample(model, seeds, steps=1, budget=J, guidance=mode, scale=lam,
                     weak_budget=None if mode == "cfg" else Jw)
        torch.testing.assert_close(got, x - v, rtol=0, atol=1e-5)  # x0 = x1 + (0 - 1) v


def test_cheap_cfg_with_weak_equal_to_main_is_cfg(model):
    cfg = sample(model, range(3), steps=3, budget=3, guidance="cfg", scale=0.5)
    ccfg = sample(model, range(3), steps=3, budget=3, guidance="ccfg", scale=0.5, weak_budget=3)
    assert torch.equal(cfg, ccfg)
    assert not torch.equal(cfg, sample(model, range(3), steps=3, budget=3, guidance="ccfg", scale=0.5))


@pytest.mark.parametrize("mode", ["cfg", "ccfg", "ag"])
def test_zero_scale_is_no_guidance(model, mode):
    plain = sample(model, range(2), steps=2, budget=3)
    assert torch.equal(sample(model, range(2), steps=2, budget=3, guidance=mode, scale=0.0), plain)
    assert torch.equal(sample(model, range(2), steps=2, budget=3, guidance=mode, w=1.0), plain)
    assert not torch.equal(sample(model, range(2), steps=2, budget=3, guidance=mode, scale=0.5), plain)


@pytest.mark.parametrize("options, expected_calls", [
    (dict(sampler="euler"), [(2, 4)] * 5),
    (dict(sampler="heun"), [(2, 4)] * 10),
    (dict(guidance="cfg", scale=1.0), [(4, 4)] * 5),                      # one batched forward
    (dict(guidance="ccfg", scale=1.0), [(2, 4), (2, 1)] * 5),             # two passes
    (dict(guidance="ag", scale=1.0, weak_budget=2), [(2, 4), (2, 2)] * 5),
    (dict(guidance="ccfg", scale=1.0, weak_budget=4), [(4, 4)] * 5),      # shared budget: batched
])
def test_sampler_makes_the_promised_calls_and_flops(model, options, expected_calls):
    recorder = CallRecorder(model)
    sample(recorder, [0, 1], steps=5, budget=4, **options)
    assert [c[:2] for c in recorder.calls] == expected_calls
    # The FLOPs reported are the FLOPs of exactly these calls.
    counted = sum(n / 2 * analytic_gflops(model.config, b) for n, b in expected_calls)
    mode = options.get("guidance", "none")
    reported = sampling_gflops(model.config, 5, 4, mode, weak_budget=options.get("weak_budget"),
                               sampler=options.get("sampler", "euler"))
    assert reported == pytest.approx(counted, rel=1e-12)


def test_guidance_interval_skips_the_weak_pass_outside(model):
    recorder = CallRecorder(model)
    sample(recorder, [0], steps=10, budget=4, guidance="ccfg", scale=1.0, interval=(0.2, 0.6))
    times = time_grid(10)[:-1]
    guided = [t for t in times if 0.2 <= t <= 0.6]
    assert len(guided) not in (0, len(times))
    assert len(recorder.calls) == len(times) + len(guided)
    assert sorted({t for n, b, t in recorder.calls if b == 1}) == pytest.approx(sorted(guided))
    full, low = analytic_gflops(model.config, 4), analytic_gflops(model.config, 1)
    assert sampling_gflops(model.config, 10, 4, "ccfg", interval=(0.2, 0.6)) == pytest.approx(
        10 * full + len(guided) * low)


def test_cfg_vs_cheap_cfg_flops_match_per_budget_flops():
    config = elit.create_model("ELIT-DiT-S/2", hidden_size=64, depth=4, num_heads=4, head_depth=1, tail_depth=1,
                               in_channels=1, num_classes=10, input_size=16).config
    full, low = analytic_gflops(config, None), analytic_gflops(config, 1)
    assert low < full
    assert sampling_gflops(config, 40, None, "cfg") == pytest.approx(80 * full)
    assert sampling_gflops(config, 40, None, "ccfg") == pytest.approx(40 * (full + low))
    assert sampling_gflops(config, 40, None, "none") == pytest.approx(40 * full)
    assert sampling_gflops(config, 40, None, "ccfg", scale=0) == pytest.approx(40 * full)
    assert sampling_gflops(config, 20, None, "ag", weak_budget=2, sampler="heun") == pytest.approx(
        40 * (full + analytic_gflops(config, 2)))


def test_budget_schedule_rule_and_list(model):
    times = time_grid(8)
    assert step_budgets(times, schedule="1@0.5,4") == [1, 1, 1, 1, 4, 4, 4, 4]  # t=0.5 itself is not > 0.5
    assert step_budgets(times, schedule="2@0.7,0.5@0.3,full") == [2, 2, 2, 0.5, 0.5, 0.5, None, None]
    recorder = CallRecorder(model)
    sample(recorder, [0], steps=8, schedule="1@0.5,4")
    assert [b for _, b, _ in recorder.calls] == [1] * 4 + [4] * 4
    recorder.calls.clear()
    sample(recorder, [0], steps=3, schedule=[1, 2, 3])
    assert [b for _, b, _ in recorder.calls] == [1, 2, 3]
    full, low = analytic_gflops(model.config, 4), analytic_gflops(model.config, 1)
    assert sampling_gflops(model.config, 8, None, schedule="1@0.5,4") == pytest.approx(4 * low + 4 * full)


@pytest.mark.parametrize("spec", ["4@0.5", "4@0.5,2@0.7,1", "4@x,1", "4@1.5,1", "a,4", "4,1"])
def test_bad_budget_schedules(spec):
    with pytest.raises(ValueError):
        step_budgets(time_grid(4), schedule=spec)


def test_time_grid_and_shift():
    grid = time_grid(4, shift=3.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0
    assert grid[2] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    assert all(a > b for a, b in zip(grid, grid[1:]))


@pytest.mark.parametrize("options, message", [
    (dict(guidance="pag", scale=1.0), "unknown guidance"),
    (dict(guidance="ag", scale=1.0, weak_budget=4), "below the main budget"),
    (dict(guidance="ag", scale=1.0, weak_budget=3, budget=2), "below the main budget"),
    (dict(guidance="ccfg", scale=1.0, weak_budget=3, budget=2), "above the main budget"),
    (dict(guidance="cfg", scale="strong"), "must be a number"),
    (dict(guidance="cfg"), "needs a scale"),
    (dict(guidance="cfg", scale=1.0, w=2.0), "not both"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(sampler="dpm"), "unknown sampler"),
    (dict(budget=9), "not a valid number"),
    (dict(budget=2, schedule="1@0.5,4"), "not both"),
    (dict(seeds=[1, 0]), "strictly increasing"),
    (dict(seeds=[0, 0]), "strictly increasing"),
    (dict(labels=[0, 1, 2]), "labels for"),
    (dict(labels=[11]), "labels must lie"),
])
def test_bad_input_is_refused_before_sampling(model, options, message):
    recorder = CallRecorder(model)
    options = {"seeds": [0, 1], **options}
    with pytest.raises(ValueError, match=message):
        sample(recorder, steps=options.pop("steps", 2), **options)
    assert recorder.calls == []


def test_unconditional_model_allows_only_none_and_autoguidance():
    model = tiny_model(num_classes=0)
    with pytest.raises(ValueError, match="class-conditional"):
        sample(model, [0], steps=1, guidance="cfg", scale=1.0)
    out = sample(model, [0], steps=1, guidance="ag", scale=1.0)
    assert out.shape == (1, 1, 16, 16)


def test_plan_describes_the_run(model):
    plan = plan_run(model, steps=4, guidance="ccfg", w=1.25)
    assert plan.weak_budget == model.budgets[0]
    assert "lambda=0.25 (w=1.25)" in plan.describe()
    assert BudgetSchedule.parse("4@0.5,16").budget_at(0.6) == 4
