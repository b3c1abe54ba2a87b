"""How long a batch takes: a two-number cost model, calibrated at start-up and corrected as it serves.

    seconds(batch of n images, plan) = correction x sum over the plan's forward calls of
                                       (alpha + beta x images in the call x GFLOPs per image)

alpha is the fixed price of one forward call (kernel launches, Python), beta the seconds per GFLOP;
GFLOPs come from `elit.cost.analytic_gflops`, so every budget, step count and guidance mode is
predicted from the same two numbers (ELIT's time tracks its FLOPs: benchmarks/forward_budgets.py).
`calibrate` measures a few (budget, batch size) points with the planner's timer
(`elit.sampling.planner.timed_sample`, the real sampling path) and fits alpha and beta; while serving,
`observe` keeps a moving ratio of measured to predicted time, so a machine that gets busier (or
quieter) than at start-up is predicted as it is now.
"""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass

from elit.cost import analytic_gflops
from elit.errors import UserError


@dataclass(frozen=True)
class PlanCost:
    """A sampling plan reduced to what its time depends on: its forward calls as
    (GFLOPs per image, images per call per requested image), in order."""
    calls: tuple

    @property
    def gflops_per_image(self) -> float:
        return float(sum(g * m for g, m in self.calls))


def plan_cost(config, plan) -> PlanCost:
    """The forward calls `elit.sampling.guidance.guided_velocity` makes for `plan`: a guided evaluation
    whose two passes share a budget (cfg, or ccfg with weak = main) is one call on twice the batch."""
    gflops = {}

    def g(budget):
        if budget not in gflops:
            gflops[budget] = analytic_gflops(config, budget)
        return gflops[budget]

    calls = []
    for t, budget in plan.evaluations():
        guided = plan.guidance.enabled and plan.guidance.applies_at(t)
        weak = budget if plan.guidance.mode == "cfg" else plan.weak_budget
        if not guided:
            calls.append((g(budget), 1))
        elif weak == budget:
            calls.append((g(budget), 2))
        else:
            calls += [(g(budget), 1), (g(weak), 1)]
    return PlanCost(tuple(calls))


class CostModel:
    """Predicts the seconds of a batch; thread-safe."""

    def __init__(self, alpha: float, beta: float, smoothing: float = 0.3, bounds=(0.2, 5.0)):
        if not (alpha >= 0 and beta > 0):
            raise UserError(f"cost model needs alpha >= 0 and beta > 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.smoothing, self.bounds = smoothing, bounds
        self.correction = 1.0
        self._lock = threading.Lock()

    def raw_seconds(self, cost: PlanCost, images: int) -> float:
        """The calibrated prediction, without the running correction."""
        return sum(self.alpha + self.beta * m * images * g for g, m in cost.calls)

    def seconds(self, cost: PlanCost, images: int) -> float:
        return self.correction * self.raw_seconds(cost, images)

    def observe(self, cost: PlanCost, images: int, seconds: float) -> None:
        """Fold one measured batch into the correction (an exponential moving average of the ratio,
        clipped so that one stalled batch cannot make every later prediction absurd)."""
        predicted = self.raw_seconds(cost, images)
        if predicted <= 0 or seconds <= 0:
            return
        lo, hi = self.bounds
        ratio = min(hi, max(lo, seconds / predicted))
        with self._lock:
            self.correction += self.smoothing * (ratio - self.correction)

    def to_dict(self) -> dict:
        return {"alpha_s": self.alpha, "beta_s_per_gflop": self.beta, "correction": round(self.correction, 4)}


def fit(points: list[tuple[float, float, int]]) -> CostModel:
    """Least squares of seconds = alpha x calls + beta x image-GFLOPs over measured points
    (image_gflops, seconds, calls)."""
    sxx = sxy = sx = sy = n = 0.0
    for x, y, calls in points:   # per call: y / calls = alpha + beta * (x / calls)
        xc, yc = x / calls, y / calls
        sxx, sxy, sx, sy, n = sxx + xc * xc, sxy + xc * yc, sx + xc, sy + yc, n + 1
    denom = n * sxx - sx * sx
    beta = (n * sxy - sx * sy) / denom if denom > 0 else 0.0
    alpha = (sy - beta * sx) / n
    if beta <= 0 or alpha < 0:
        # Timing noise can tilt the fit on a busy machine: fall back to "all of it scales with FLOPs",
        # taking the slowest seconds per GFLOP seen, which over- rather than under-predicts.
        alpha, beta = 0.0, max(y / x for x, y, _ in points)
    return CostModel(max(alpha, 0.0), beta)


def calibrate(model, budgets, batch_sizes, steps: int = 2, repeats: int = 3) -> tuple[CostModel, list[dict]]:
    """Time unguided sampling runs of `steps` steps at each (budget, batch size) and fit a CostModel.
    A text model runs with a text condition of its config's length (`text_tokens`), the length its
    FLOP counts assume, so the fit sees its text stream's work. Returns the model and the measured
    rows (for /v1/models and the logs)."""
    from elit.sampling import plan_run
    from elit.sampling.planner import timed_sample
    text = {"labels": model.backbone.example_condition(1)} if model.config.condition == "text" else {}
    rows, points = [], []
    for budget in budgets:
        for n in batch_sizes:
            setting = dict(steps=steps, budget=budget)
            timed_sample(model, list(range(n)), {**setting, **text}, batch_size=n)     # warm-up (allocator, caches)
            per_image = statistics.median(timed_sample(model, list(range(n)), {**setting, **text}, batch_size=n)[1]
                                          for _ in range(repeats))
            plan = plan_run(model, **setting)
            cost = plan_cost(model.config, plan)
            points.append((n * cost.gflops_per_image, per_image * n, len(cost.calls)))
            rows.append({"budget": budget, "images": n, "steps": steps, "seconds": per_image * n})
    return fit(points), rows
