"""TeaCache-style step skipping: reuse the last velocity while the timestep embedding barely moves.

    cached = TeaCache(model, threshold=0.1)
    images = elit.sample(cached, seeds=range(16), steps=40)     # or elit.sample(model, ..., cache=0.1)
    print(cached.calls, cached.skips)

Criterion (the timestep-embedding relative L1, which the ELIT paper recommends for class-conditional
models because the class also modulates the blocks' inputs): at every call compute
e = model.backbone.t_embedder(t) and rel = mean|e - e_prev| / mean|e_prev|, optionally rescaled by a
polynomial p(rel) fitted offline, and accumulate it. While the accumulated value stays below the
threshold the last velocity output is returned without calling the model; when it reaches the
threshold the model is called and the accumulator resets to 0. The first call always runs, and with
threshold 0 every call runs, so the output equals the uncached run exactly.

The wrapper keeps separate state for every (budget, batch shape, labels) stream, so the conditional
and weak passes of guidance never reuse each other's outputs. It never touches the model's forward;
it only calls it. Call `reset()` before a new trajectory (the sampler does).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class _Stream:
    embedding: torch.Tensor
    output: torch.Tensor
    accumulated: float = 0.0


class TeaCache:
    """A callable with the model's signature `(x, t, y=None, budget=None)` that may skip calls."""

    def __init__(self, model, threshold: float = 0.0, coefficients: list[float] | None = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
            raise ValueError(f"cache threshold must be a number >= 0, got {threshold!r}")
        if getattr(getattr(model, "backbone", None), "t_embedder", None) is None:
            raise ValueError("TeaCache needs a model with `backbone.t_embedder` (an elit model)")
        self.model, self.threshold = model, float(threshold)
        # Polynomial in rel (highest power first, as numpy.polyval); None = identity.
        self.coefficients = None if coefficients is None else [float(c) for c in coefficients]
        self.calls = self.skips = 0
        self._streams: dict = {}

    def __getattr__(self, name):
        # Budgets, config, null_class_id... come from the wrapped model, so samplers accept the wrapper.
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def reset(self) -> None:
        """Forget the cached outputs (call before each new trajectory); keeps the call counters."""
        self._streams.clear()

    def _rescale(self, rel: float) -> float:
        if self.coefficients is None:
            return rel
        value = 0.0
        for c in self.coefficients:
            value = value * rel + c
        return value

    @torch.no_grad()
    def __call__(self, x, t, y=None, budget=None):
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
        embedding = self.model.backbone.t_embedder(t[:1]).float()
        labels = b"" if y is None else y.detach().cpu().numpy().tobytes()
        key = (self.model.resolve_budget(budget), tuple(x.shape), labels)
        stream = self._streams.get(key)
        if stream is not None and self.threshold > 0:
            rel = ((embedding - stream.embedding).abs().mean() / stream.embedding.abs().mean().clamp_min(1e-12)).item()
            accumulated = stream.accumulated + self._rescale(rel)
            stream.embedding = embedding
            if accumulated < self.threshold:
                stream.accumulated = accumulated
                self.skips += 1
                return stream.output
        output = self.model(x, t, y, budget=budget)
        self._streams[key] = _Stream(embedding, output)
        self.calls += 1
        return output


def calibrate(model, seeds, thresholds, coefficients=None, **sample_options) -> list[dict]:
    """Measure TeaCache's error / skip trade-off: one row per threshold.

    Samples `seeds` uncached (the reference) and with each threshold, with the same options
    (`elit.sample` keywords: steps, budget, guidance...). Rows: threshold, calls, skips,
    skip_fraction (of forward calls), rmse and max_abs_error against the uncached images (data
    space), seconds.
    """
    from elit.sampling import sample
    start = time.perf_counter()
    reference = sample(model, seeds, **sample_options)
    reference_seconds = time.perf_counter() - start
    rows = []
    for threshold in thresholds:
        cached = TeaCache(model, threshold, coefficients)
        start = time.perf_counter()
        images = sample(cached, seeds, **sample_options)
        seconds = time.perf_counter() - start
        diff = images - reference
        rows.append(dict(threshold=float(threshold), calls=cached.calls, skips=cached.skips,
                         skip_fraction=cached.skips / max(1, cached.calls + cached.skips),
                         rmse=diff.pow(2).mean().sqrt().item(), max_abs_error=diff.abs().max().item(),
                         seconds=seconds, uncached_seconds=reference_seconds))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'threshold':>9} {'calls':>6} {'skips':>6} {'skipped':>8} {'rmse':>9} {'max err':>9} {'seconds':>8}"]
    for r in rows:
        lines.append(f"{r['threshold']:>9.3g} {r['calls']:>6} {r['skips']:>6} {r['skip_fraction']:>8.1%} "
                     f"{r['rmse']:>9.4f} {r['max_abs_error']:>9.4f} {r['seconds']:>8.2f}")
    return "\n".join(lines)
