"""Periodic sample grids: one row per budget, labelled with its GFLOPs per image, so the log folder
shows "one model, many budgets" as training goes."""
from __future__ import annotations

import pathlib

import torch


def default_sample_budgets(model) -> list[int | None]:
    """Powers of two within the model's budgets, plus the full budget (1, 2, 4, 8, 16 for J = 16)."""
    budgets = model.budgets
    if not budgets:
        return [None]
    rows = [b for b in budgets if b & (b - 1) == 0]
    if budgets[-1] not in rows:
        rows.append(budgets[-1])
    return rows


def row_label(config, budget: int | None) -> str:
    from elit.cost import analytic_gflops
    gflops = analytic_gflops(config, budget)
    name = "plain backbone" if budget is None else f"budget {budget}"
    return f"{name}  {gflops:.3g} GFLOPs"


def write_budget_grid(model, path, budgets: list | None = None, steps: int = 40, per_row: int = 10,
                      labels=None) -> pathlib.Path:
    """Sample seeds 0..per_row-1 (labels seed % num_classes, or `labels`: a TextCondition with one
    prompt per column for a text-to-image model) at every budget; one PNG (rows = budgets).
    GFLOPs are analytic, per image and per forward pass (2 x multiply-adds). A video model's grid
    shows filmstrips, with an animated GIF of the same grid beside the PNG."""
    from elit.sampling import sample
    from elit.viz import budget_grid
    budgets = budgets or default_sample_budgets(model)
    was_training = model.training
    model.eval()
    rows, names = [], []
    with torch.no_grad():
        for budget in budgets:
            images = sample(model, seeds=list(range(per_row)), labels=labels, budget=budget, steps=steps)
            rows.append(images.clamp(-1, 1))
            names.append(row_label(model.config, budget))
    model.train(was_training)
    if rows[0].dim() == 5:
        from elit.video import clip_grid
        return clip_grid(rows, names, path)[0]
    return budget_grid(rows, names, path)
