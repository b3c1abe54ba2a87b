"""TeaCache-style step skipping: reuse the last velocity while the timestep embedding barely moves.

    cached = TeaCache(model, threshold=0.1)
    images = elit.sample(cached, seeds=range(16), steps=40)     # or elit.sample(model, ..., cache=0.1)
    print(cached.calls, cached.skips)

Criterion (the timestep-embedding relative L1, which the ELIT paper recommends for class-conditional
models because the class also modulates the blocks' inputs): at every call compute
e = model.time_embedding(t) and rel = mean|e - e_prev| / mean|e_prev|, optionally rescaled by a
polynomial p(rel) fitted offline, and accumulate it. While the accumulated value stays below the
threshold the last velocity output is returned without calling the model; when it reaches the
threshold the model is called and the accumulator resets to 0. The first call always runs, and with
threshold 0 every call runs, so the output equals the uncached run exactly.

The wrapper keeps separate state for every (budget, batch shape, labels) stream, so the conditional
and weak passes of guidance never reuse each other's outputs. It never touches the model's forward;
it only calls it. Call `reset()` before a new trajectory (the sampler does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from elit.errors import UserError


@dataclass
class _Stream:
    embedding: torch.Tensor
    output: torch.Tensor
    accumulated: float = 0.0


class TeaCache:
    """A callable with the model's signature `(x, t, y=None, budget=None)` that may skip calls."""

    def __init__(self, model, threshold: float = 0.0, coefficients: list[float] | None = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
            raise UserError(f"cache threshold must be a number >= 0, got {threshold!r}")
        if not callable(getattr(model, "time_embedding", None)):
            raise UserError("TeaCache needs a model with a `time_embedding(t)` method (an elit model)")
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
        embedding = self.model.time_embedding(t[:1]).float()
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
