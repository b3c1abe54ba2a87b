"""Sampling: ODE solvers, guidance (CFG, cheap CFG, autoguidance), budget schedules, step caching
and the cost planner, all around any elit model.

    images = elit.sample(model, seeds=range(16), budget=4, steps=40, guidance="ccfg", scale=0.25)
"""
from elit.sampling.cache import TeaCache
from elit.sampling.guidance import MODES, Guidance, make_guidance
from elit.sampling.plan import SAMPLERS, RunPlan, plan_gflops, plan_run, sampling_gflops
from elit.sampling.schedules import BudgetSchedule, parse_budget, time_grid
from elit.sampling.solvers import (default_labels, initial_noise, integrate, iter_batches, parse_seeds,
                                   resolve_labels, sample, sample_batch)

__all__ = ["BudgetSchedule", "Guidance", "MODES", "RunPlan", "SAMPLERS", "TeaCache", "default_labels",
           "initial_noise", "integrate", "iter_batches", "make_guidance", "parse_budget", "parse_seeds",
           "plan_gflops", "plan_run", "resolve_labels", "sample", "sample_batch", "sampling_gflops", "time_grid"]
