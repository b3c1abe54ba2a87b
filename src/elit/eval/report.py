"""Tables and plots of sweep rows: quality vs GFLOPs, budget x guidance grids."""
from __future__ import annotations

import pathlib

from elit.errors import UserError


def _guidance_and_scale(row: dict) -> tuple[str, float]:
    """A row's guidance mode and scale; unguided rows all share scale 0 whatever they recorded."""
    return row["guidance"], row["scale"] if row["guidance"] != "none" else 0.0


PLOT_SOFTWARE = "elit eval"


def check_plot_out(path, overwrite: bool = False) -> None:
    """An existing --plot is replaced only if elit eval drew it (its PNG says so)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            software = image.info.get("Software")
    except Exception:   # not an image at all
        software = None
    if software != PLOT_SOFTWARE:
        raise UserError(f"--plot {path} exists and is not a plot elit eval drew; choose another --plot file, or "
                        f"move that one")


def plot_quality_vs_gflops(rows: list[dict], metric: str, path, title: str | None = None) -> pathlib.Path:
    """One curve per (model, guidance, scale): quality vs GFLOPs per image (log x), like the paper's teaser.
    Colour: model and guidance mode; marker: guidance mode; line style and hollow markers: the
    smaller guidance scales (filled: the largest)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple, list] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        key = (r["model"], *_guidance_and_scale(r))
        curves.setdefault(key, []).append((r["gflops_per_image"], r[metric], r["latents_per_group"]))
    if not curves:
        raise UserError(f"no rows carry the metric {metric!r}")
    families = sorted({k[:2] for k in curves})            # (model, guidance) -> one colour each
    colours = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    scales = sorted({k[2] for k in curves if k[1] != "none"})
    markers = {"none": "o", "cfg": "s", "ccfg": "^", "ag": "D"}
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for (model, guidance, scale), pts in sorted(curves.items(), key=lambda kv: (kv[0][0], kv[0][1] != "none", kv[0])):
        pts.sort()
        below_top = len(scales) - 1 - scales.index(scale) if guidance != "none" else 0   # 0: largest scale
        name = model if guidance == "none" else f"{model} {guidance} lambda={scale:g}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(guidance, "o"), label=name,
                color=colours(families.index((model, guidance))), fillstyle="none" if below_top else "full",
                linestyle=("-", "--", ":", "-.")[below_top % 4])
        for x, y, b in pts:
            if b is not None:
                ax.annotate(str(b), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, FuncFormatter
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("GFLOPs per image, whole sampling run (2 x MACs)")
    ax.set_ylabel(f"{metric} (lower is better)" if metric in ("fid", "fdd", "fd_fmnist", "kid") else metric)
    ax.set_title(title or f"{metric} vs compute; labels = latents per group")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: points stay visible
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": PLOT_SOFTWARE})   # lets a rerun know the file is its own
    plt.close(fig)
    return path


def format_table(rows: list[dict], metrics) -> str:
    head = f"{'model':<14} {'J~':>4} {'guidance':>8} {'lambda':>6} {'weak':>4} " + \
           " ".join(f"{m:>10}" for m in metrics) + f" {'GFLOPs/img':>11} {'img/s':>7}"
    lines = [head]
    for r in rows:
        b = "-" if r["latents_per_group"] is None else r["latents_per_group"]
        weak = "-" if r["weak_budget"] is None else r["weak_budget"]
        vals = " ".join(f"{r[m]:>10.3f}" if r.get(m) is not None else f"{'-':>10}" for m in metrics)
        ips = f"{r['images_per_s']:>7.2f}" if r.get("images_per_s") else f"{'-':>7}"
        lines.append(f"{r['model']:<14} {b:>4} {r['guidance']:>8} {r['scale']:>6g} {weak:>4} {vals} "
                     f"{r['gflops_per_image']:>11.2f} {ips}")
    return "\n".join(lines)


GUIDANCE_NAMES = {"none": "none", "cfg": "CFG", "ccfg": "cheap CFG", "ag": "AG"}


def budget_guidance_table(rows: list[dict], model: str, metric: str) -> str:
    """One model's `metric` as a markdown grid: a line per budget (largest first), a column per
    guidance mode and scale. Reads the budget curve of every mode at a glance; '-' marks a cell
    that has no row."""
    mine = [r for r in rows if r["model"] == model and r.get(metric) is not None]
    if not mine:
        raise UserError(f"no {model!r} rows carry the metric {metric!r}")
    order = list(GUIDANCE_NAMES)
    columns = sorted({_guidance_and_scale(r) for r in mine},
                     key=lambda c: (c[0] != "none", c[1], order.index(c[0]) if c[0] in order else len(order), c[0]))
    budgets = sorted({r["latents_per_group"] for r in mine}, key=lambda b: -(b or 0))
    cell = {(r["latents_per_group"], *_guidance_and_scale(r)): r[metric] for r in mine}
    head = ["J~"] + [GUIDANCE_NAMES.get(g, g) if g == "none" else f"{GUIDANCE_NAMES.get(g, g)} {s:g}"
                     for g, s in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in budgets:
        vals = [f"{cell[(b, g, s)]:.2f}" if (b, g, s) in cell else "-" for g, s in columns]
        lines.append(f"| {'-' if b is None else b} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
