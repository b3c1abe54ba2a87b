"""Measure TeaCache's error / skip trade-off on a model: one row per threshold."""
from __future__ import annotations

import time

from elit.sampling.cache import TeaCache
from elit.sampling.solvers import sample


def calibrate(model, seeds, thresholds, coefficients=None, **sample_options) -> list[dict]:
    """Measure TeaCache's error / skip trade-off: one row per threshold.

    Samples `seeds` uncached (the reference) and with each threshold, with the same options
    (`elit.sample` keywords: steps, budget, guidance...). Rows: threshold, calls, skips,
    skip_fraction (of forward calls), rmse and max_abs_error against the uncached images (data
    space), seconds.
    """
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
