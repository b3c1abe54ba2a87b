"""The rectified-flow objective (elit.flow) and the per-step budget draw (elit.train.budgets)."""
import math

import pytest
import torch

from elit.flow import TimeSampler, flow_loss, interpolate, shift_time, t_bin_index, velocity_target
from elit.model import BudgetSpace
from elit.train.budgets import TrainingBudgets


def test_interpolation_endpoints_and_velocity():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(interpolate(x0, eps, torch.zeros(3)), x0)      # t = 0: data
    assert torch.equal(interpolate(x0, eps, torch.ones(3)), eps)      # t = 1: pure noise
    # The target is the time derivative of the path: finite difference along t.
    t, h = torch.full((3,), 0.3, dtype=torch.float64), 1e-6
    x0d, epsd = x0.double(), eps.double()
    fd = (interpolate(x0d, epsd, t + h) - interpolate(x0d, epsd, t - h)) / (2 * h)
    torch.testing.assert_close(fd, velocity_target(x0d, epsd))


def test_flow_loss_is_zero_for_the_exact_velocity_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 2, 8, 8, generator=g), torch.randn(4, 2, 8, 8, generator=g)
    t = torch.rand(4, generator=g) * 0.9 + 0.05

    def oracle(xt, t, y, budget=None):  # knows x0, so (x_t - x0) / t = eps - x0 exactly
        return (xt - x0) / t.view(-1, 1, 1, 1)

    loss = flow_loss(oracle, x0, None, t, eps)
    assert loss.shape == (4,) and loss.max() < 1e-10
    zero = flow_loss(lambda xt, t, y, budget=None: torch.zeros_like(xt), x0, None, t, eps)
    torch.testing.assert_close(zero, (eps - x0).pow(2).flatten(1).mean(1))


def test_time_shift():
    t = torch.linspace(0, 1, 11)
    assert torch.equal(shift_time(t, 1.0), t)
    s = shift_time(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and torch.all(s[1:] > s[:-1]) and torch.all(s >= t)
    assert math.isclose(float(shift_time(torch.tensor(0.5), 3.0)), 1.5 / 2.0, rel_tol=1e-6)


def test_time_sampler_distributions():
    n = 200_000
    g = torch.Generator().manual_seed(0)
    t = TimeSampler("logit_normal", mean=0.5, std=0.8)(n, g)
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean()) - 0.5) < 0.01 and abs(float(logit.std()) - 0.8) < 0.01
    u = TimeSampler("uniform")(n, g)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    # Same generator seed -> same draws (the trainer relies on this for resume).
    a = TimeSampler()(16, torch.Generator().manual_seed(5))
    b = TimeSampler()(16, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown time distribution"):
        TimeSampler("beta")


def test_t_bins_cover_the_unit_interval():
    t = torch.tensor([0.0, 0.19999, 0.2, 0.5, 0.99, 1.0])
    assert t_bin_index(t, 5).tolist() == [0, 0, 1, 2, 4, 4]


def test_budget_schedule_depends_only_on_seed_and_step():
    budgets = BudgetSpace(16, 1)
    a, b = TrainingBudgets("multi", budgets, seed=3), TrainingBudgets("multi", budgets, seed=3)
    seq = [a(s) for s in range(4000)]
    assert seq == [b(s) for s in range(4000)]                  # any process, any rank
    assert [a(s) for s in range(3999, -1, -1)] == seq[::-1]    # no hidden state: a resume redraws the same
    counts = torch.bincount(torch.tensor(seq), minlength=17)[1:]
    assert counts.min() > 4000 / 16 * 0.7                     # every budget drawn, roughly uniformly
    assert seq != [TrainingBudgets("multi", budgets, seed=4)(s) for s in range(4000)]


def test_budget_modes_and_errors():
    budgets = BudgetSpace(16, 1)
    capped = TrainingBudgets("multi", budgets, seed=0, lo=2, hi=4)
    assert {capped(s) for s in range(200)} == {2, 3, 4}
    assert TrainingBudgets("full", budgets, seed=0)(7) == 16
    assert TrainingBudgets(4, budgets, seed=0)(7) == 4
    assert TrainingBudgets("full", BudgetSpace(), seed=0)(7) is None      # plain DiT
    with pytest.raises(ValueError, match="budget_max"):
        TrainingBudgets("multi", budgets, seed=0, lo=2, hi=17)
    with pytest.raises(ValueError, match="not one of the model's budgets"):
        TrainingBudgets(0, budgets, seed=0)
    with pytest.raises(ValueError, match="plain backbone"):
        TrainingBudgets("multi", BudgetSpace(), seed=0)
