"""`elit eval`: budget sweeps. Generate at each (budget, guidance, scale), measure, tabulate, plot.

Images stream from the sampler straight into the metric accumulators: nothing is written per
image. Reference statistics and feature networks are built once for the whole sweep. With
`--json OUT` every finished row is saved at once (atomically), and rerunning the same command
skips the rows already in OUT, so a long sweep resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

from elit.metrics.evaluate import METRIC_NET, compute_metrics, extract_stats, get_extractor
from elit.metrics.stats import FeatureStats, load_stats

ROW_KEYS = ("model", "latents_per_group", "guidance", "scale", "weak_budget", "steps", "sampler")


def sweep_settings(budgets, guidances, scales, weak_budget, lowest_budget) -> list[dict]:
    """The (budget, guidance, scale, weak budget) rows of a sweep; impossible ones are left out.

    budgets [None] means a plain backbone: it gets no cheap CFG or autoguidance rows.
    """
    rows = []
    for b in budgets:
        for g in guidances:
            if b is None and g in ("ccfg", "ag"):
                continue
            if g == "none":
                rows.append(dict(latents_per_group=b, guidance="none", scale=0.0, weak_budget=None))
                continue
            weak = None
            if g in ("ccfg", "ag"):
                weak = weak_budget if weak_budget is not None else lowest_budget
                if b is not None and (weak > b or (g == "ag" and weak >= b)):
                    continue  # autoguidance needs a weaker pass; cheap CFG's weak pass can't exceed the main one
            for s in scales:
                rows.append(dict(latents_per_group=b, guidance=g, scale=float(s), weak_budget=weak))
    return rows


def reference_stats(ref, nets, extractors, batch_size, progress) -> dict[str, FeatureStats]:
    """Load or measure the reference once per network. `ref`: a source, a stats file, or {net: ...}."""
    out, to_measure = {}, {}
    for n in nets:
        r = ref.get(n) if isinstance(ref, dict) else ref
        if r is None:
            raise ValueError(f"no reference for the {n} network; pass --ref {n}=PATH")
        if str(r).endswith(".npz") and os.path.isfile(r) and "mu" in _npz_keys(r):
            out[n] = load_stats(r)
            out[n].check_net(extractors[n].name, f"reference {r}")
        else:
            to_measure.setdefault(str(r), []).append(n)
    for src, group in to_measure.items():
        out.update(extract_stats(src, {n: extractors[n] for n in group}, batch_size=batch_size,
                                 progress=progress, desc="reference"))
    return out


def _npz_keys(path) -> list[str]:
    import numpy as np
    with np.load(path) as z:
        return list(z.keys())


def evaluate_row(model, setting: dict, *, num: int, steps: int, sampler: str, metrics, refs, extractors,
                 batch_size: int, seed_start: int = 0, progress: bool = True, fd_method: str = "sqrtm",
                 decode=None) -> dict:
    """Generate `num` images (seeds seed_start..) at one setting and measure them. `decode` turns a
    latent-space model's samples into pixels (elit.vae.LatentDecoder)."""
    from elit.sampling import iter_batches, sampling_gflops
    from elit.viz import to_uint8

    seeds = list(range(seed_start, seed_start + num))
    options = dict(steps=steps, sampler=sampler, budget=setting["latents_per_group"], guidance=setting["guidance"],
                   scale=setting["scale"] if setting["guidance"] != "none" else None,
                   weak_budget=setting["weak_budget"])
    gen_seconds = 0.0

    def batches():
        nonlocal gen_seconds
        it = iter_batches(model, seeds, None, batch_size=batch_size, progress=progress, **options)
        while True:
            start = time.perf_counter()
            try:
                _, _, images = next(it)
            except StopIteration:
                return
            if decode is not None:   # a latent model's images/s includes its decoder
                images = decode(images)
            gen_seconds += time.perf_counter() - start
            yield to_uint8(images)

    res = compute_metrics(batches(), refs, metrics, batch_size=batch_size, extractors=extractors, progress=False,
                          fd_method=fd_method)
    gflops = sampling_gflops(model.config, steps=steps, budget=setting["latents_per_group"],
                             guidance=setting["guidance"], weak_budget=setting["weak_budget"], sampler=sampler,
                             scale=options["scale"])
    row = {**setting, "steps": steps, "sampler": sampler, "w": 1.0 + setting["scale"],
           "num_samples": res["num_samples"], "gflops_per_image": gflops,
           "images_per_s": round(res["num_samples"] / gen_seconds, 3) if gen_seconds else None}
    for m in metrics:
        row[m] = res[m]
        if m + "_std" in res:
            row[m + "_std"] = res[m + "_std"]
    row["protocols"] = res["protocols"]
    return row


def row_key(row: dict) -> tuple:
    """What makes two rows the same measurement (resuming skips a row whose key is saved)."""
    return tuple(row.get(k) for k in ROW_KEYS)


def setting_key(label: str, setting: dict, steps: int, sampler: str) -> tuple:
    """The row_key a setting of model `label` will have once measured."""
    return row_key({**setting, "model": label, "steps": steps, "sampler": sampler})


def _write_json_atomic(path: pathlib.Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)


def run_sweep(models: dict, settings: dict[str, list[dict]], *, num: int, steps: int, sampler: str, metrics, ref,
              batch_size: int = 64, json_path=None, progress: bool = True, net_kwargs: dict | None = None,
              seed_start: int = 0, fd_method: str = "sqrtm", decode=None) -> list[dict]:
    """Evaluate every model (label -> model) at its settings: label -> list of settings (see
    `sweep_settings`), or a list of (label, setting) pairs to run in that order. Resume from and
    append to json_path."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_NET]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NET)}")
    nets = sorted({METRIC_NET[m] for m in metrics})
    extractors = {n: get_extractor(n, **(net_kwargs or {})) for n in nets}
    refs = reference_stats(ref, nets, extractors, batch_size, progress)
    path = pathlib.Path(json_path) if json_path else None
    rows = json.loads(path.read_text()) if path and path.is_file() else []
    # A saved row counts as done only if it carries every metric asked for now; others are redone.
    rows = [r for r in rows if all(r.get(m) is not None for m in metrics)]
    done = {row_key(r) for r in rows}
    pairs = settings if isinstance(settings, list) else [(label, s) for label in models for s in settings[label]]
    todo = [(label, s) for label, s in pairs
            if setting_key(label, s, steps, sampler) not in done]
    if path and rows:
        print(f"resuming: {len(rows)} rows already in {path}, {len(todo)} to go")
    for i, (label, setting) in enumerate(todo):
        scale = f" lambda={setting['scale']:g}" if setting["guidance"] != "none" else ""
        weak = f" weak={setting['weak_budget']}" if setting["weak_budget"] is not None else ""
        print(f"[{i + 1}/{len(todo)}] {label}: budget {setting['latents_per_group']} {setting['guidance']}{scale}{weak}",
              flush=True)
        row = evaluate_row(models[label], setting, num=num, steps=steps, sampler=sampler, metrics=metrics,
                           refs=refs, extractors=extractors, batch_size=batch_size, progress=progress,
                           seed_start=seed_start, fd_method=fd_method, decode=decode)
        row = {"model": label, **row}
        rows.append(row)
        print("   " + ", ".join(f"{m}={row[m]:.3f}" for m in metrics) + f", {row['gflops_per_image']:.2f} GFLOPs/img",
              flush=True)
        if path:
            _write_json_atomic(path, rows)
    return rows


def _guidance_and_scale(row: dict) -> tuple[str, float]:
    """A row's guidance mode and scale; unguided rows all share scale 0 whatever they recorded."""
    return row["guidance"], row["scale"] if row["guidance"] != "none" else 0.0


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
        raise ValueError(f"no rows carry the metric {metric!r}")
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
    fig.savefig(path, dpi=120)
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
        raise ValueError(f"no {model!r} rows carry the metric {metric!r}")
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


# ---------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="model folder; repeat for several (optionally LABEL=DIR)")
    parser.add_argument("--budgets", default=None, help="comma-separated latents per group (default: all)")
    parser.add_argument("--guidance", default="none", help="comma-separated: none,cfg,ccfg,ag")
    parser.add_argument("--scales", "--scale", dest="scales", default="1.0",
                        help="comma-separated guidance scales lambda (0 = none; w = 1 + lambda)")
    parser.add_argument("--weak-budget", type=int, default=None, help="weak pass budget (default: the lowest)")
    parser.add_argument("--num", type=int, default=2000, help="samples per row (FID needs thousands)")
    parser.add_argument("--ref", action="append", required=True,
                        help="reference: stats .npz, image folder, ADM .npz or fmnist-test; NET=REF per network")
    parser.add_argument("--metrics", default="fid", help="comma-separated: fid,fdd,fd_fmnist,is,precision,recall,kid")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sampler", default="euler", choices=["euler", "heun"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write (and resume from) the rows as JSON")
    parser.add_argument("--plot", default=None, help="write a quality-vs-GFLOPs plot (PNG)")
    parser.add_argument("--plot-metric", default=None, help="metric on the plot's y axis (default: the first)")
    parser.add_argument("--fd-method", default="sqrtm", choices=["sqrtm", "eigh"],
                        help="matrix square root of the Frechet distance: scipy sqrtm (the pytorch-fid/ADM "
                             "recipe) or a symmetric eigendecomposition (same value, faster)")
    parser.add_argument("--vae", default=None, help="AutoencoderKL that decodes latent-space models' samples")
    parser.add_argument("--vae-subfolder", default=None)
    parser.add_argument("--no-progress", action="store_true")


def _parse_list(text: str, cast, what: str) -> list:
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} must be a comma-separated list, got {text!r}") from None


def run(args) -> int:
    from elit.hub import load_pretrained

    if args.num < 2:
        raise ValueError("--num must be at least 2 (a covariance needs two samples; FID needs thousands)")
    models = {}
    for spec in args.model:
        label, _, path = spec.rpartition("=") if "=" in spec else (None, None, spec)
        models[label or pathlib.Path(path).name] = load_pretrained(path, device=args.device)
    guidances = _parse_list(args.guidance, str, "guidance")
    bad = [g for g in guidances if g not in ("none", "cfg", "ccfg", "ag")]
    if bad:
        raise ValueError(f"unknown guidance mode(s) {bad}; choose from none, cfg, ccfg, ag")
    scales = _parse_list(args.scales, float, "scales")
    metrics = _parse_list(args.metrics, str, "metrics")
    refs = {}
    for r in args.ref:
        net, sep, path = r.partition("=")
        if sep and net in ("inception", "dinov2", "fmnist"):
            refs[net] = path
        else:
            refs = r
    asked = _parse_list(args.budgets, int, "budgets") if args.budgets else None
    settings = {}
    for label, m in models.items():
        if not m.budgets:       # a plain backbone: one row per guidance setting, no budgets
            settings[label] = sweep_settings([None], guidances, scales, None, None)
            continue
        budgets = asked or m.budgets
        bad = [b for b in budgets if b not in m.budgets]
        if bad:
            raise ValueError(f"budgets {bad} are not valid for model {label} (valid: {m.budgets})")
        settings[label] = sweep_settings(budgets, guidances, scales, args.weak_budget, m.budgets[0])
    decode = None
    if args.vae:
        from elit.vae import LatentDecoder, load_vae
        decode = LatentDecoder(load_vae(args.vae, args.vae_subfolder, device=args.device))
    rows = run_sweep(models, settings, num=args.num, steps=args.steps, sampler=args.sampler, metrics=metrics,
                     ref=refs, batch_size=args.batch_size, json_path=args.json, progress=not args.no_progress,
                     seed_start=args.seed_start, fd_method=args.fd_method, decode=decode)
    print(format_table(rows, metrics))
    for m, proto in rows[-1]["protocols"].items() if rows else []:
        print(f"{m}: {proto}")
    print(f"steps {args.steps} ({args.sampler}); GFLOPs per image for the whole run, 2 x multiply-adds")
    if args.plot:
        print(f"plot: {plot_quality_vs_gflops(rows, args.plot_metric or metrics[0], args.plot)}")
    return 0
