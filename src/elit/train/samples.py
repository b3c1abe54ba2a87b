"""Periodic sample grids: one row per budget, labelled with its GFLOPs per image, one column per
class (labelled with the class names when known), so the log folder shows "one model, many
budgets" as training goes."""
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
    """'4 latents/group  0.031 GFLOPs': the budget in the words users read, and its cost."""
    from elit.cost import analytic_gflops
    gflops = analytic_gflops(config, budget)
    name = "plain backbone" if budget is None else f"{budget} latent{'s' * (budget != 1)}/group"
    return f"{name}  {gflops:.3g} GFLOPs"


def column_labels(num_classes: int, per_row: int, class_names: list[str] | None = None) -> list[str] | None:
    """Seed i has label i % num_classes, so column i shows that class: its name, or 'class i'."""
    if num_classes <= 0:
        return None
    names = class_names if class_names and len(class_names) == num_classes else [f"class {k}" for k in range(num_classes)]
    return [names[i % num_classes] for i in range(per_row)]


def write_budget_grid(model, path, budgets: list | None = None, steps: int = 40, per_row: int = 10,
                      class_names: list[str] | None = None, progress: bool = False, labels=None,
                      captions: list[str] | None = None) -> pathlib.Path:
    """Sample seeds 0..per_row-1 at every budget; one PNG (rows = budgets, columns = classes). A class
    model's seed i has label i % num_classes (columns headed by `class_names`); a text-to-image model
    takes `labels`, a TextCondition with one prompt per column (headed by `captions`). GFLOPs are
    analytic, per image and per forward pass (2 x multiply-adds). A video model's grid shows
    filmstrips, with an animated GIF of the same grid beside the PNG."""
    from elit.sampling import sample
    from elit.sampling.solvers import progress_bar
    from elit.viz import budget_grid
    budgets = budgets or default_sample_budgets(model)
    was_training = model.training
    model.eval()
    rows, names = [], []
    bar = progress_bar(len(budgets) * steps, f"budget grid ({len(budgets)} budgets)") if progress else None
    try:
        with torch.no_grad():
            for budget in budgets:
                images = sample(model, seeds=list(range(per_row)), labels=labels, budget=budget, steps=steps,
                                progress=bar or False)
                rows.append(images.clamp(-1, 1))
                names.append(row_label(model.config, budget))
    finally:
        if bar is not None:
            bar.close()
    model.train(was_training)
    if labels is None:
        columns = column_labels(model.num_classes, per_row, class_names)
    else:
        columns = captions if captions and len(captions) == per_row else None
    if rows[0].dim() == 5:
        from elit.video import clip_grid
        return clip_grid(rows, names, path, column_labels=columns)[0]
    return budget_grid(rows, names, path, column_labels=columns)
