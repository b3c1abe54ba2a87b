"""The serving scheduler's policy on a fake clock: batching within caps, the deadline-aware budget choice
(falls under overload, rises after), the look-ahead, and refusals before any work starts. Nothing here
reads the real time: a fake `run_batch` advances the clock by the cost model's own prediction (times a
slowdown), and arrivals that fall inside a batch are submitted at their own times."""
import numpy as np
import pytest

import elit
from elit.serve.costmodel import CostModel, fit, plan_cost
from elit.serve.scheduler import Ladder, Overloaded, Scheduler, Settings


@pytest.fixture(scope="module")
def config():
    return elit.create_model("ELIT-DiT-S/4", input_size=32, in_channels=1, num_classes=10, patch_size=4,
                             hidden_size=32, depth=3, num_heads=4, head_depth=1, tail_depth=1).config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Sim:
    """A scheduler on a fake clock. `arrivals` are (time, submit) pairs run when the clock passes them."""

    def __init__(self, config, slowdown=1.0, alpha=0.002, beta=20.0, **kw):
        self.clock, self.slowdown = FakeClock(), slowdown
        self.cost = CostModel(alpha, beta)
        self.ladder = Ladder(config, min_steps=kw.pop("min_steps", None))
        self.sched = Scheduler(self.cost, self.run_batch, clock=self.clock, **kw)
        self.batches, self.arrivals, self.done, self.refused = [], [], {}, []

    def run_batch(self, settings, option, seeds, labels):
        start = self.clock.now
        end = start + self.slowdown * self.cost.raw_seconds(option.cost, len(seeds))
        self.batches.append((option.budget, option.steps, len(seeds), list(seeds)))
        while self.arrivals and self.arrivals[0][0] <= end:   # requests arriving while this batch runs
            self.clock.now, submit = self.arrivals.pop(0)
            submit()
        self.clock.now = end
        return np.zeros((len(seeds), 2, 2, 1), dtype=np.uint8)

    def job(self, seed, settings, deadline_ms=None, budget=None, images=1):
        options = self.ladder.elastic(settings) if deadline_ms is not None else self.ladder.fixed(settings, budget)
        return self.sched.new_job(settings, range(seed, seed + images), [0] * images, options, deadline_ms)

    def submitter(self, *args, **kw):
        def submit():
            job = self.job(*args, **kw)
            try:
                future = self.sched.submit(job)
            except Overloaded:
                self.refused.append(job)
                return
            future.add_done_callback(lambda f: self.done.__setitem__(job, (self.clock.now, f)))
        return submit

    def run(self, arrivals):
        """Run until every arrival is submitted and the queue is empty (the worker idles between arrivals)."""
        self.arrivals = sorted(arrivals, key=lambda a: a[0])
        while self.arrivals or self.sched.queue:
            if not self.sched.queue:
                self.clock.now = max(self.clock.now, self.arrivals[0][0])
            while self.arrivals and self.arrivals[0][0] <= self.clock.now:
                self.arrivals.pop(0)[1]()
            self.sched.step()

    def full_seconds(self, settings, images=1):
        return self.cost.seconds(self.ladder.fixed(settings, None)[0].cost, images)


def test_plan_cost_counts_the_forward_calls_the_sampler_makes(config):
    from elit.cost import analytic_gflops
    from elit.sampling import plan_run, sample
    model = elit.create_model("ELIT-DiT-S/4", input_size=32, in_channels=1, num_classes=10, patch_size=4,
                              hidden_size=32, depth=3, num_heads=4, head_depth=1, tail_depth=1).eval()
    for guidance, weak in [("none", None), ("cfg", None), ("ccfg", 1), ("ccfg", 4), ("ag", 1)]:
        scale = None if guidance == "none" else 0.5
        calls = []
        forward = model.forward

        def recorder(x, t, y=None, budget=None):
            calls.append((x.shape[0], model.resolve_budget(budget)))
            return forward(x, t, y, budget=budget)
        model.forward = recorder
        try:
            sample(model, [0, 1, 2], steps=2, budget=4, guidance=guidance, scale=scale, weak_budget=weak, batch_size=3)
        finally:
            del model.forward
        plan = plan_run(model, steps=2, budget=4, guidance=guidance, scale=scale, weak_budget=weak)
        cost = plan_cost(config, plan)
        assert [(3 * m, g) for g, m in cost.calls] == [(n, pytest.approx(analytic_gflops(config, b))) for n, b in calls]


def test_fit_recovers_the_cost_model_and_the_correction_follows_measurements():
    alpha, beta = 0.004, 0.25
    points = [(x, calls * alpha + beta * x, calls) for x, calls in [(1.0, 2), (8.0, 2), (3.0, 4), (20.0, 4)]]
    model = fit(points)
    assert model.alpha == pytest.approx(alpha) and model.beta == pytest.approx(beta)
    from elit.serve.costmodel import PlanCost
    cost = PlanCost(((1.0, 1), (0.5, 2)))
    before = model.seconds(cost, 4)
    for _ in range(30):
        model.observe(cost, 4, 2 * before)      # the machine got twice as slow
    assert model.seconds(cost, 4) == pytest.approx(2 * before, rel=1e-3)
    model.observe(cost, 4, 1000 * before)       # one stall moves it by a bounded step only
    assert model.correction <= 2 + 0.3 * (5 - 2) + 1e-9


def test_light_load_gets_the_full_budget_and_a_tight_deadline_the_largest_that_fits(config):
    sim = Sim(config, max_batch_images=8)
    s = Settings(steps=8)
    full = sim.full_seconds(s)
    sim.run([(0.0, sim.submitter(0, s, deadline_ms=1000 * 3 * full))])
    assert sim.batches[-1][:2] == (config.budget_space.budgets[-1], 8)
    # A deadline between the costs of two budgets: the larger one that fits is chosen.
    options = sim.ladder.elastic(s)
    fits = lambda o, ms: sim.cost.seconds(o.cost, 1) <= (1 - sim.sched.headroom) * ms / 1000   # noqa: E731
    ms = 1000 * sim.cost.seconds(options[2].cost, 1) / (1 - sim.sched.headroom) * 1.001
    sim.run([(sim.clock.now + 1, sim.submitter(1, s, deadline_ms=ms))])
    chosen = next(o for o in options if (o.budget, o.steps) == sim.batches[-1][:2])
    assert fits(chosen, ms) and all(not fits(o, ms) for o in options[:chosen.rank])
    assert chosen.rank == 2


def test_overload_lowers_budgets_meets_deadlines_and_they_rise_again(config):
    s = Settings(steps=8)
    full_budget = config.budget_space.budgets[-1]

    def scenario(deadline_aware):
        sim = Sim(config, max_batch_images=4, min_steps=4)
        full = sim.full_seconds(s)
        deadline = 4 * full
        kw = dict(deadline_ms=1000 * deadline) if deadline_aware else dict(budget=None)
        times = ([i * 3 * full for i in range(5)] +                           # light: one every 3 x full
                 [15 * full + i * full / 2 for i in range(60)] +              # 2x overload
                 [60 * full + i * 3 * full for i in range(5)])                # light again
        sim.run([(t, sim.submitter(i, s, **kw)) for i, t in enumerate(times)])
        latency = {job.seeds[0]: end - job.arrival for job, (end, f) in sim.done.items()}
        budgets = {seed: budget for budget, _, _, seeds in sim.batches for seed in seeds}
        return sim, deadline, latency, budgets

    sim, deadline, latency, budgets = scenario(deadline_aware=True)
    assert not sim.refused and len(latency) == 70
    assert max(latency.values()) <= deadline             # every request met its deadline
    assert all(budgets[i] == full_budget for i in range(5))
    overload = [budgets[i] for i in range(5, 65)]
    assert np.median(overload) < full_budget              # budgets fell under load
    assert all(budgets[i] == full_budget for i in range(66, 70))   # and rose again after it
    # The same arrivals at a fixed full budget: the queue grows and the deadline is missed.
    _, _, fixed_latency, _ = scenario(deadline_aware=False)
    assert max(fixed_latency.values()) > 2 * deadline


def test_look_ahead_leaves_room_for_the_requests_behind(config):
    sim = Sim(config, max_batch_images=4)
    a, b = Settings(steps=8, guidance="cfg", scale=1.0), Settings(steps=8, guidance="cfg", scale=2.0)  # two batches
    cost = {o.budget: sim.cost.seconds(o.cost, 1) for o in sim.ladder.elastic(a)}
    # Planning time for budget 2 and then budget 1, not for full and then anything: a greedy first
    # batch would take the full budget (it fits alone) and leave the second request too little.
    ms = 1000 * (cost[2] + cost[1]) * 1.001 / (1 - sim.sched.headroom)
    assert cost[4] + cost[1] > (1 - sim.sched.headroom) * ms / 1000 >= cost[4]
    sim.run([(0.0, sim.submitter(0, a, deadline_ms=ms)), (0.0, sim.submitter(1, b, deadline_ms=ms))])
    assert len(sim.done) == 2 and not sim.refused
    assert all(end - job.arrival <= ms / 1000 for job, (end, _) in sim.done.items())
    assert [budget for budget, *_ in sim.batches] == [2, 1]   # the second gets what is left


def test_a_deadline_out_of_reach_is_refused_before_any_work(config):
    sim = Sim(config, max_batch_images=4)
    s = Settings(steps=8)
    cheapest = min(sim.cost.seconds(o.cost, 1) for o in sim.ladder.elastic(s))
    with pytest.raises(Overloaded) as e:
        sim.sched.submit(sim.job(0, s, deadline_ms=1000 * cheapest / 2))
    assert e.value.retry_after >= 1 and not sim.sched.queue
    # Accepted, but the machine turns slow: the queued request is refused at its turn, never run.
    slow = Sim(config, slowdown=50.0, max_batch_images=1)
    first, second = slow.job(0, s, budget=None), slow.job(1, s, deadline_ms=1000 * 20 * cheapest)
    slow.sched.submit(first)
    future = slow.sched.submit(second)
    slow.sched.step()
    slow.sched.step()
    assert isinstance(future.exception(), Overloaded)
    assert [seeds for *_, seeds in slow.batches] == [[0]]


def test_batches_share_settings_and_never_exceed_the_caps(config):
    sim = Sim(config, max_batch_images=4, max_queue_images=10)
    s, t = Settings(steps=4), Settings(steps=4, guidance="cfg", scale=1.0)
    jobs = [sim.job(0, s, images=3), sim.job(3, t), sim.job(4, s), sim.job(5, s, images=2), sim.job(7, t)]
    for job in jobs:
        sim.sched.submit(job)
    with pytest.raises(Overloaded, match="queue is full"):
        sim.sched.submit(sim.job(8, s, images=3))       # 8 queued + 3 > 10
    while sim.sched.step():
        pass
    assert [(n, seeds) for _, _, n, seeds in sim.batches] == [(4, [0, 1, 2, 4]), (2, [3, 7]), (2, [5, 6])]
    results = [job.future.result() for job in jobs]
    assert [r.batch_images for r in results] == [4, 2, 4, 2, 2]
    assert [len(r.images) for r in results] == [3, 1, 1, 2, 1]


def test_the_options_cache_stays_bounded_whatever_clients_send(config):
    ladder = Ladder(config)
    ladder.cache_size = 8
    for i in range(50):                       # every request with its own scale: its own settings
        ladder.elastic(Settings(steps=4, guidance="cfg", scale=1 + i / 100))
    assert len(ladder._cache) == 8
