"""The figure tables of README.md and docs/, generated from committed JSON.

Each table sits between a `<!-- NAME:start -->` line and a `<!-- NAME:end -->` line and is rendered
from a JSON next to its doc (`DOCS` below lists them all), so a number edited by hand in a doc, or a
JSON updated without its doc, fails tests/test_docs.py. Measured figures are stored as the benchmark
that measured them writes them (`--json PATH --key NAME`), each entry with its `source` (command,
machine, date, load); figures of earlier runs whose raw output was not kept are transcribed from the
doc and say so (`"transcribed": true`). Analytic FLOPs are computed by the library (`--flops`).

    python scripts/docs_tables.py            # rewrite every generated section from its JSON
    python scripts/docs_tables.py --check    # exit 1 naming every stale section (and a stale flops.json)
    python scripts/docs_tables.py --flops    # recompute docs/flops.json with elit, then rewrite

The study drivers fill their own reports with `fill_doc` from here (docs/results/fashion-mnist*.md,
tested beside them; video.md, also listed below); scripts/t2i_report.py writes docs/results/
text-to-image.md whole.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import platform
import shlex
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- markers and files
def fill_doc(text: str, sections: dict[str, str]) -> str:
    """Replace what lies between each `<!-- NAME:start -->` line and its `<!-- NAME:end -->`."""
    for name, body in sections.items():
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            raise SystemExit(f"the doc has no {start.strip()} ... {end} markers: "
                             "put them around the section to generate")
        a = text.index(start) + len(start)
        text = text[:a] + body + text[text.index(end, a):]
    return text


def section(text: str, name: str) -> str | None:
    """What lies between the markers of `name` now (None without markers)."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return None
    a = text.index(start) + len(start)
    return text[a:text.index(end, a)]


def write_entry(path, entry: dict, key: str | None = None) -> None:
    """What a benchmark's `--json PATH [--key NAME]` writes: the entry as the whole file, or under
    NAME in the docs JSON at PATH with its other entries kept, so one run updates its own table."""
    from elit._io import write_json
    path = pathlib.Path(path)
    if key:
        entry = {**(json.loads(path.read_text()) if path.is_file() else {}), key: entry}
    write_json(path, entry)


def measured_source(load_before: float, threads: int | None = None) -> dict:
    """The `source` a benchmark stores beside its figures: on a shared machine the load average
    before and after is what tells a reader how far to trust the seconds."""
    import torch
    return {"command": "python " + shlex.join(sys.argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            "torch": torch.__version__, "threads": threads or torch.get_num_threads(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "transcribed": False}


# ----------------------------------------------------------------------------- rendering helpers
def table(head: list, rows: list[list]) -> str:
    """A markdown table; an empty cell is written `| |`, as the hand-written tables were."""
    def line(cells):
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"
    return "\n".join([line(head), "|" + "---|" * len(head), *map(line, rows)]) + "\n"


def ratio(x: float) -> str:
    return f"{x:.2f}x"


def bold(text, on: bool = True) -> str:
    return f"**{text}**" if on else str(text)


def short_exp(x: float) -> str:
    """1.4e-06 -> 1.4e-6, and 0 -> 0 (as the compile table writes them)."""
    if not x:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def duration(seconds: float) -> str:
    """375 -> '6 min 15 s', 1800 -> '30 min', 3.5 -> '3.5 s'."""
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")


# ----------------------------------------------------------------------------- docs/performance.md
def forward_budgets(data: dict, key: str = "forward-budgets") -> str:
    """Time ratio / FLOP ratio per budget below the full one, bold where it misses the target."""
    run = data[key]
    budgets = sorted(r["budget"] for r in run["results"][0]["rows"])
    low = budgets[0]
    head = ["model, batch", *(f"J~ = {b}" if b == low else str(b) for b in budgets[:-1]),
            f"FLOP ratio at J~ = {low}", f"time at J~ = {low} / full (s)"]
    rows = []
    for res in run["results"]:
        by = sorted(res["rows"], key=lambda r: r["budget"])
        cells = [f"{r['time_per_flop']:.2f}" for r in by[:-1]]
        cells = [bold(c, float(c) > run["target"]) for c in cells]
        rows.append([f"{res['model']}, {res['batch']}", *cells, f"{by[0]['flop_ratio']:.3f}",
                     f"{by[0]['seconds']:.3f} / {by[-1]['seconds']:.3f}"])
    return table(head, rows)


COMPILE_MODES = {"eager": "eager", "blocks": "`compile_blocks`", "model": "`torch.compile(model)`",
                 "static": "`torch.compile(model, dynamic=False)`"}


def compile_cpu(data: dict) -> str:
    run = data["compile-cpu"]

    def vs_eager(m):
        lo, hi = m["ratio_min"], m["ratio_max"]
        if lo is None:
            return "-"
        if lo == hi:
            return f"{lo:g}"
        if m.get("ratio_min_budget") is None:     # a transcribed range without its budgets
            return f"{lo:.2f}-{hi:.2f}"
        return f"{lo:.2f} (J~ = {m['ratio_min_budget']}) to {hi:.2f} (J~ = {m['ratio_max_budget']})"
    head = ["mode", f"first pass over {len(run['budgets'])} budgets (compiling)", "graphs", "forward time vs eager",
            "max abs diff vs eager"]
    rows = [[COMPILE_MODES[m["mode"]], f"{m['first_pass_s']:.1f} s", m["graphs"], vs_eager(m),
             "-" if m["max_abs_diff"] is None else short_exp(m["max_abs_diff"])] for m in run["modes"]]
    return table(head, rows)


def precision(data: dict) -> str:
    run = data["precision"]
    src = run["source"]
    head = ["model", "width", "batch", "bf16 vs fp32, full budget", "budget 1", "fp32 forward", "bf16 forward",
            "bf16 speed", "auto here"]
    rows = [[r["model"], r["width"], r["batch"], short_exp(r["rel_error_full"]),
             short_exp(r["rel_error_budget_1"]) if "rel_error_budget_1" in r else "-",
             f"{r['seconds_fp32']:.3f} s", f"{r['seconds_bf16']:.3f} s", f"{r['speedup']:.2f}x", r["auto"]]
            for r in run["rows"]]
    note = (f"\n{src['threads']} thread(s), load average {src['load_average'][0]}-{src['load_average'][1]}, "
            f"median of {run['repeats']}; CPU bf16: {src['cpu_bf16']}; {src['date'][:10]}.\n")
    return table(head, rows) + note


def precision_sampling(data: dict) -> str:
    run = data["precision-sampling"]
    src = run["source"]
    by = {(r["model"], r["precision"]): r for r in run["rows"]}
    models = list(dict.fromkeys(r["model"] for r in run["rows"]))
    metrics = [(key, name) for key, name in (("fd_fmnist", "FD-FMNIST"), ("fid", "FID"))
               if any(key in r for r in run["rows"])]
    head = ["model", "Euler steps", "samples"]
    for _, name in metrics:
        head += [f"{name} fp32", f"{name} bf16", "bf16 - fp32"]
    rows = []
    for m in models:
        a, b = by[(m, "fp32")], by[(m, "bf16")]
        cells = [m, a["steps"], f"{a['num_samples']:,}"]
        for key, _ in metrics:
            cells += ([f"{a[key]:.3f}", f"{b[key]:.3f}", f"{b[key] - a[key]:+.3f}"] if key in a and key in b
                      else ["not measured", "", ""])
        rows.append(cells)
    note = (f"\nThe same seeds (0..{run['rows'][0]['num_samples'] - 1}, label = seed % 10), full budget, unguided; "
            f"{src['threads']} thread(s), load average {src['load_average'][0]}-{src['load_average'][1]}; "
            f"CPU bf16: {src['cpu_bf16']}; {src['date'][:10]}.\n")
    return table(head, rows) + note


def precision_training(data: dict) -> str:
    """benchmarks/precision_training.py's entry: the loss of the two runs at a few logged steps, then
    the mean relative difference and the seconds per step of each."""
    run = data["precision-training"]
    curve = run["curve"]
    shown = sorted({curve[min(len(curve) - 1, round(i * (len(curve) - 1) / 4))]["step"] for i in range(5)})
    by_step = {c["step"]: c for c in curve}
    rows = [[s, f"{by_step[s]['fp32']:.4f}", f"{by_step[s]['bf16']:.4f}",
             f"{(by_step[s]['bf16'] - by_step[s]['fp32']) / by_step[s]['fp32']:+.2%}"] for s in shown]
    sec = run["seconds_per_step"]
    note = (f"\n{run['config']}, seed {run['seed']}, batch {run['batch']}, {run['steps']:,} steps, each loss the mean of the "
            f"{run['log_every']} steps before it. bf16 - fp32 over all {len(curve)} logged points: "
            f"{run['mean_relative_difference']:+.2%} on average, {run['last_fifth_relative_difference']:+.2%} over the last "
            f"fifth. Seconds per step on one thread: fp32 {sec['fp32']:.2f}, bf16 {sec['bf16']:.2f} "
            f"({run['source'].get('cpu_bf16', 'CPU bf16 not recorded')}); {run['source']['date'][:10]}.\n")
    return table(["step", "loss fp32", "loss bf16", "bf16 vs fp32"], rows) + note


# ----------------------------------------------------------------------------- docs/performance-peers.md
def peer_rows(run: dict) -> list[tuple]:
    """(row key, part label, case label, figures) per measured row of a peer_codes.py entry; the key
    pairs a row with the same row of another run."""
    parts, out = run["parts"], []
    for i, r in enumerate(parts.get("forward", [])):    # the part is named on its first row only
        part = f"forward, ELIT-SiT-{run['model']}/2 ({run['layout']})" if i == 0 else ""
        out.append((("forward", r["latents"]), part, f"{r['latents']}/{run['J']}" + (" latents" if i == 0 else ""), r))
    for r in parts.get("train", []):
        out.append((("train",), f"train, DiT-{run['model']}/2", "one step", r))
    for r in parts.get("sample", []):
        part = f"sample, Euler {run['steps']}, CCFG {run['J']} + 1 latents"
        out.append((("sample",), part, f"batch of {run['batch']}", r))
    return out


def timed(r: dict) -> list[str]:
    """reference (s), ours (s), ratio, of mins."""
    return [f"{r['ref_s']:.4f}", f"{r['ours_s']:.4f}", ratio(r["ratio"]), ratio(r["of_mins"])]


def peer_table(key: str, data: dict) -> str:
    head = ["part", "case", "reference (s)", "ours (s)", "ratio", "of mins", "max abs diff"]
    return table(head, [[part, case, *timed(r), f"{r['max_diff']:.2e}"] for _, part, case, r in peer_rows(data[key])])


def peers_final(data: dict) -> str:
    """The eager run, with the compiled run's figures for the same rows beside it."""
    compiled = {key: r for key, _, _, r in peer_rows(data["final-compiled"])}
    head = ["part", "case", "reference (s)", "ours (s)", "ratio", "of mins", "ours compiled (s)", "ratio", "of mins"]
    rows = []
    for key, part, case, r in peer_rows(data["final-eager"]):
        c = compiled.get(key)
        beside = (f"{c['ours_s']:.4f}", ratio(c["ratio"]), ratio(c["of_mins"])) if c else ("not run", "", "")
        rows.append([part, case, *timed(r), *beside])
    return table(head, rows)


def peers_by_budget(data: dict) -> str:
    """The forward rows of one run, one column per budget."""
    rows = data["layout-2-8-2"]["parts"]["forward"]
    return table(["latents / group", *(r["latents"] for r in rows)], [
        ["reference (s)", *(f"{r['ref_s']:.4f}" for r in rows)], ["ours (s)", *(f"{r['ours_s']:.4f}" for r in rows)],
        ["ratio", *(ratio(r["ratio"]) for r in rows)], ["of mins", *(ratio(r["of_mins"]) for r in rows)],
        ["max abs diff", *(f"{r['max_diff']:.2e}" for r in rows)]])


PEER_PRECISION_SIZES = ("S", "B")


def both_ratios(r: dict) -> str:
    """'1.02x (0.99x)': the ratio of the medians, then of the fastest repeats (steadier at 3 repeats)."""
    return f"{ratio(r['ratio'])} ({ratio(r['of_mins'])})"


def peers_precision(data: dict) -> str:
    """Per size and row: each code at its own default (the precisions it ran named), then both in bf16;
    from the entries precision-{S,B}-{default,bf16} of peer_codes.py --precision."""
    head = ["part", "case", "defaults: theirs / ours", "reference (s)", "ours (s)", "ratio (of mins)",
            "both bf16: reference (s)", "ours (s)", "ratio (of mins)"]
    rows = []
    for size in PEER_PRECISION_SIZES:
        default, bf16 = data[f"precision-{size}-default"], data[f"precision-{size}-bf16"]
        in_bf16 = {key: r for key, _, _, r in peer_rows(bf16)}
        for key, part, case, r in peer_rows(default):
            chosen = default["chosen"][key[0]]
            b = in_bf16.get(key)
            rows.append([part, case, f"{chosen['theirs']} / {chosen['ours']}", f"{r['ref_s']:.4f}", f"{r['ours_s']:.4f}",
                         both_ratios(r), *((f"{b['ref_s']:.4f}", f"{b['ours_s']:.4f}", both_ratios(b))
                                           if b else ("not run", "", ""))])
    return table(head, rows)


def peers_summary(data: dict) -> str:
    """docs/performance.md's digest of the final runs: ratios only."""
    eager, compiled = data["final-eager"], data["final-compiled"]
    latents = [r["latents"] for r in eager["parts"]["forward"]]
    head = ["", *(f"J~ = {k}" if i == 0 else str(k) for i, k in enumerate(latents)),
            f"DiT-{eager['model']}/2 train step", f"sampling, {eager['steps']} Euler steps, cheap CFG"]
    rows = []
    for run in (eager, compiled):
        parts = run["parts"]
        forward = {r["latents"]: ratio(r["ratio"]) for r in parts.get("forward", [])}
        rows.append(["ours with `--compile`" if run["compile"] else "both eager",
                     *(forward.get(k, "not run") for k in latents),
                     *(ratio(parts[p][0]["ratio"]) if parts.get(p) else "not run" for p in ("train", "sample"))])
    return table(head, rows)


# ----------------------------------------------------------------------------- docs/serving.md
def budgets_used(budgets: dict, steps: int) -> str:
    """{'16@10': 32, '15@10': 3} -> '16: 32, 15: 3'; a long spread points to the list under the table."""
    if len(budgets) > 4:
        values = [int(k.split("@")[0]) for k in budgets]
        return f"{max(values)}..{min(values)} (below)"
    return ", ".join((k.split("@")[0] if k.endswith(f"@{steps}") else k) + f": {n}" for k, n in budgets.items())


def load_test(data: dict) -> str:
    """Bold: the tails at the highest load, and there the deadline-aware mode's hit rate and errors."""
    run = data["load-test"]
    top = max(r["factor"] for r in run["runs"])
    rows = []
    for r in run["runs"]:
        s, hot = r["summary"], r["factor"] == top
        policy = hot and r["mode"] == "deadline"
        mode = "fixed full" if r["mode"] == "fixed" else f"deadline {run['deadline_ms']:g} ms"
        rows.append([f"{r['factor']:g}x", mode, s["requests"], f"{s['throughput_img_s']:.2f}", f"{s['p50_ms']:.0f}",
                     bold(f"{s['p95_ms']:.0f}", hot), f"{s['p99_ms']:.0f}",
                     bold(f"{s['deadline_hit_rate']:.3f}", policy), bold(s["errors"], policy),
                     budgets_used(s["budgets"], run["steps"])])
    head = ["load", "mode", "requests", "images/s", "p50 ms", "p95 ms", "p99 ms", "deadline hit rate", "errors",
            "budgets used"]
    return table(head, rows)


RAY_SERVERS = {"capacity-serve": "`elit serve` (one process)", "capacity-ray-1": "`elit serve --ray --replicas 1`",
               "capacity-ray-2": "`elit serve --ray --replicas 2`"}


def ray_capacity(data: dict) -> str:
    return table(["server", "images/s at the full budget"],
                 [[label, f"{data[key]['capacity_img_s']:.2f}"] for key, label in RAY_SERVERS.items()])


# ----------------------------------------------------------------------------- metrics.md, README.md
def feature_timing(data: dict) -> str:
    rows = []
    for r in data["rows"]:
        time = f"{r['seconds_per_1000_images']:,}"
        if "loaded_run" in r:       # the same network timed again inside a real run, for contrast
            loaded = r["loaded_run"]
            time += f" ({r['threads']} thread); {loaded['seconds_per_1000_images']:,} in {loaded['run']}"
        rows.append([r["network"], time, f"{r['images']:,} images"])
    return table(["network", "s / 1,000 images", "measured on"], rows)


def readme_timing(data: dict) -> str:
    rows = []
    for r in data["rows"]:
        time = ("about " if r.get("approximate") else "") + duration(r["seconds"])
        if "cached_seconds" in r:
            time += f" the first time, {duration(r['cached_seconds'])} after"
        rows.append([r["step"], time, r.get("notes", "")])
    return table(["step", "time", "notes"], rows)


# ----------------------------------------------------------------------------- docs/results/video.md
VIDEO_NAMES = {"video-dit": "video DiT", "elit-video": "ELIT (single budget)", "elit-video-mb": "ELIT-MB"}


def video_results(rows: list[dict], reference: dict | None = None) -> str:
    """The study's rows (video.json), then the real clips' line (video-reference.json)."""
    head = ["model", "J~", "per-frame FD-FMNIST", "clip FD-FMNIST", "class consistency", "label accuracy",
            "GFLOPs/clip", "clips/s"]
    body = [[VIDEO_NAMES[r["model"]], r["latents_per_group"] or "-", f"{r['fd_fmnist']:.2f}",
             f"{r['fd_fmnist_clip']:.2f}", f"{r['class_consistency']:.3f}", f"{r['label_accuracy']:.3f}",
             f"{r['gflops_per_image']:.2f}", f"{r['images_per_s']:.2f}"] for r in rows]
    if reference:
        ref = reference["reference"]
        body.append([f"real test clips ({ref['clips']})", "", "", "", f"{ref['class_consistency']:.2f}",
                     f"{ref['label_accuracy']:.2f}", "", ""])
    return table(head, body)


# ----------------------------------------------------------------------------- analytic FLOPs
GUIDANCE = ("none", "cfg", "ccfg", "ag")
QWEN_PAPER_CCFG = [0.688, 0.494, 0.409, 0.369]     # the paper's Table 3, for comparison


def compute_flops() -> dict:
    """docs/flops.json: the analytic FLOPs per image the docs quote, counted by the library (no weights)."""
    from elit.cost import analytic_gflops
    from elit.model import ModelConfig, preset_config
    from elit.model.backbones import QwenImageArgs
    from elit.sampling import sampling_gflops
    presets = []
    for size in (32, 64):
        for name in ("DiT-XL/2", "ELIT-DiT-XL/2"):
            cfg = preset_config(name, input_size=size)
            row = {"model": name, "input_size": size, "full_gflops": analytic_gflops(cfg)}
            if cfg.elastic:
                space = cfg.budget_space
                row.update(full_budget=space.latents_per_group, lowest_budget=space.min_budget,
                           lowest_gflops=analytic_gflops(cfg, space.min_budget))
            presets.append(row)
    sampling = []
    for size in (32, 64):
        cfg = preset_config("ELIT-DiT-XL/2", input_size=size)
        lowest = cfg.budget_space.min_budget
        sampling.append({"model": "ELIT-DiT-XL/2", "input_size": size, "steps": 40,
                         "forward_full": analytic_gflops(cfg), "forward_lowest": analytic_gflops(cfg, lowest),
                         **{m: sampling_gflops(cfg, 40, None, m) for m in GUIDANCE}})
    # Qwen-Image 20B at 1024px, the paper's Table 3 setting; cheap CFG's uncond pass at 12.5%.
    window, J = 16, 256
    plain = ModelConfig(backbone=QwenImageArgs(input_size=128, text_tokens=300))
    elastic = plain.override(elit=True, head_depth=8, tail_depth=8, window=[window, window], latent_pos="tokens",
                             min_budget=J // 8)
    original, weak = analytic_gflops(plain), analytic_gflops(elastic, J // 8)
    qwen = {"window": window, "latents_per_window": J, "text_tokens": 300, "original_gflops": original, "rows": []}
    for fraction, paper in zip((1.0, 0.5, 0.25, 0.125), QWEN_PAPER_CCFG):
        gflops = analytic_gflops(elastic, fraction)
        qwen["rows"].append({"fraction": fraction, "gflops": gflops, "pass_vs_original": gflops / original,
                             "ccfg_step_vs_original_cfg": (gflops + weak) / (2 * original), "paper": paper})
    # FLUX.1-dev at 1024px: 19 double + 38 single blocks, 512 T5 tokens, guidance-distilled (one pass a step).
    from elit.model.backbones import FluxArgs
    plain = ModelConfig(backbone=FluxArgs(input_size=128, text_tokens=512, guidance_embeds=True))
    elastic = plain.override(elit=True, head_depth=8, tail_depth=8, window=[window, window], latent_pos="tokens",
                             min_budget=J // 8)
    original = analytic_gflops(plain)
    flux = {"window": window, "latents_per_window": J, "text_tokens": 512, "head_depth": 8, "tail_depth": 8,
            "original_gflops": original, "rows": []}
    for fraction in (1.0, 0.5, 0.25, 0.125):
        gflops = analytic_gflops(elastic, fraction)
        flux["rows"].append({"fraction": fraction, "gflops": gflops, "pass_vs_original": gflops / original})
    # Wan2.1-T2V-14B at 480p, 81 frames (21 x 30 x 52 tokens), 512 UMT5 tokens; 3-D windows of 3x6x4
    # tokens, Read after block 5 / Write before the last 5 of 40 (make_elastic's default); CFG: 2 passes.
    from elit.model.backbones import WanArgs
    wan_window = [3, 6, 4]
    plain = ModelConfig(backbone=WanArgs())
    J = wan_window[0] * wan_window[1] * wan_window[2]
    elastic = plain.override(elit=True, head_depth=5, tail_depth=5, window=wan_window, latent_pos="tokens",
                             min_budget=J // 8)
    original, weak = analytic_gflops(plain), analytic_gflops(elastic, J // 8)
    wan = {"window": wan_window, "latents_per_window": J, "groups": elastic.num_groups, "grid": list(plain.grid),
           "text_tokens": 512, "head_depth": 5, "tail_depth": 5, "original_gflops": original, "rows": []}
    for fraction in (1.0, 0.5, 0.25, 0.125):
        gflops = analytic_gflops(elastic, fraction)
        wan["rows"].append({"fraction": fraction, "gflops": gflops, "pass_vs_original": gflops / original,
                            "ccfg_step_vs_original_cfg": (gflops + weak) / (2 * original)})
    return {"source": {"computed": True, "command": "python scripts/docs_tables.py --flops",
                       "how": "elit.cost.analytic_gflops and elit.sampling.sampling_gflops: analytic FLOPs "
                              "(2 x multiply-adds) per image, batch 1, no weights"},
            "presets": presets, "sampling": sampling, "qwen-image": qwen, "flux": flux, "wan": wan}


def model_flops(data: dict) -> str:
    rows = []
    for r in data["presets"]:
        elastic = "lowest_budget" in r
        rows.append([r["model"], f"{r['input_size']} ({8 * r['input_size']}px)",
                     f"{r['full_gflops']:.3f}" + (f" (J={r['full_budget']})" if elastic else ""),
                     f"{r['lowest_gflops']:.3f} (J~={r['lowest_budget']})" if elastic else "-",
                     f"{r['lowest_gflops'] / r['full_gflops']:.3f}" if elastic else "-"])
    return table(["model", "input", "full budget", "lowest budget", "lowest / full"], rows)


def sampling_flops(data: dict) -> str:
    rows = [[f"{8 * r['input_size']}px (input {r['input_size']})",
             f"{r['forward_full']:.2f} / {r['forward_lowest']:.2f}", *(f"{r[m]:.1f}" for m in GUIDANCE),
             f"{r['ccfg'] / r['cfg']:.3f}"] for r in data["sampling"]]
    return table(["resolution", "one forward, full / lowest", "no guidance", "CFG", "cheap CFG", "autoguidance",
                  "cheap CFG / CFG"], rows)


def qwen_flops(data: dict) -> str:
    q = data["qwen-image"]
    rows = [[f"{100 * r['fraction']:g}%" + (f" ({q['latents_per_window']}/window)" if r["fraction"] == 1 else ""),
             f"{r['gflops']:,.0f}", f"{r['pass_vs_original']:.3f}", f"{r['ccfg_step_vs_original_cfg']:.3f}",
             f"{r['paper']:.3f}"] for r in q["rows"]]
    rows.append(["original", f"{q['original_gflops']:,.0f}", 1, 1, 1])
    w = q["window"]
    return table(["image tokens kept", f"GFLOPs per pass ({w}x{w} windows)", "pass vs original",
                  "CCFG step vs original CFG", "paper (Table 3)"], rows)


def flux_flops(data: dict) -> str:
    f = data["flux"]
    rows = [[f"{100 * r['fraction']:g}%" + (f" ({f['latents_per_window']}/window)" if r["fraction"] == 1 else ""),
             f"{r['gflops']:,.0f}", f"{r['pass_vs_original']:.3f}"] for r in f["rows"]]
    rows.append(["original", f"{f['original_gflops']:,.0f}", 1])
    w = f["window"]
    return table(["image tokens kept", f"GFLOPs per pass ({w}x{w} windows)", "pass vs original"], rows)


def wan_flops(data: dict) -> str:
    f = data["wan"]
    rows = [[f"{100 * r['fraction']:g}%" + (f" ({f['latents_per_window']}/window)" if r["fraction"] == 1 else ""),
             f"{r['gflops']:,.0f}", f"{r['pass_vs_original']:.3f}", f"{r['ccfg_step_vs_original_cfg']:.3f}"]
            for r in f["rows"]]
    rows.append(["original", f"{f['original_gflops']:,.0f}", 1, 1])
    w = "x".join(map(str, f["window"]))
    return table(["video tokens kept", f"GFLOPs per pass ({w} windows)", "pass vs original",
                  "CCFG step vs original CFG"], rows)


# ----------------------------------------------------------------------------- docs/training.md
def objective_parity(data: dict) -> str:
    """benchmarks/peer_codes.py --only objective, one row per model size and budget."""
    rows = []
    for key, run in sorted(data.items()):
        for r in run["parts"]["objective"]:
            rows.append([f"ELIT-SiT-{run['model']}/2 ({run['layout']}), batch {run['batch']}", r["case"].strip(),
                         f"{r['theirs']:.6f}", f"{r['ours']:.6f}", f"{r['max_diff']:.1e}", f"{r['relative']:.1e}"])
    return table(["model", "case", "their loss (mean)", "ours (mean)", "max abs diff", "relative"], rows)


# ----------------------------------------------------------------------------- the registry
PERF, PEERS, SERVING = "docs/performance.json", "docs/performance-peers.json", "docs/serving.json"
FLOPS = "docs/flops.json"
VIDEO = ("docs/results/video.json", "docs/results/video-reference.json")

# doc -> [(section, JSON path or paths (their contents are the render function's arguments), render)]
DOCS = {
    "README.md": [("timing", "docs/readme-timing.json", readme_timing)],
    "docs/metrics.md": [("feature-timing", "docs/metrics-timing.json", feature_timing)],
    "docs/model.md": [("flops", FLOPS, model_flops)],
    "docs/sampling.md": [("sampling-flops", FLOPS, sampling_flops)],
    "docs/text-to-image.md": [("qwen-image-flops", FLOPS, qwen_flops), ("flux-flops", FLOPS, flux_flops),
                              ("wan-flops", FLOPS, wan_flops)],
    "docs/performance.md": [("forward-budgets", PERF, forward_budgets),
                            ("forward-budgets-bf16", PERF, functools.partial(forward_budgets, key="forward-budgets-bf16")),
                            ("compile-cpu", PERF, compile_cpu),
                            ("precision", PERF, precision), ("precision-sampling", PERF, precision_sampling),
                            ("precision-training", PERF, precision_training),
                            ("peers-summary", PEERS, peers_summary)],
    "docs/performance-peers.md": [("peers-final", PEERS, peers_final),
                                  ("peers-main", PEERS, functools.partial(peer_table, "main-1-thread")),
                                  ("peers-batch-1", PEERS, functools.partial(peer_table, "batch-1")),
                                  ("peers-layout-2-8-2", PEERS, peers_by_budget),
                                  ("peers-precision", PEERS, peers_precision)],
    "docs/serving.md": [("load-test", SERVING, load_test), ("ray-capacity", SERVING, ray_capacity)],
    "docs/results/video.md": [("video-results", VIDEO, video_results)],
    "docs/training.md": [("objective-parity", "docs/training-parity.json", objective_parity)],
}


def render(root: pathlib.Path, doc: str) -> dict[str, str]:
    """{section: its table} for `doc`, from the JSON under `root`."""
    out = {}
    for name, paths, fn in DOCS[doc]:
        paths = (paths,) if isinstance(paths, str) else paths
        out[name] = fn(*(json.loads((root / p).read_text()) for p in paths))
    return out


def stale_sections(root: pathlib.Path = REPO) -> list[str]:
    """'doc: section' for every section that differs from its rendering (or has no markers)."""
    stale = []
    for doc in DOCS:
        text = (root / doc).read_text()
        stale += [f"{doc}: {name}" for name, body in render(root, doc).items() if section(text, name) != body]
    return stale


def close(stored, computed, rel: float = 1e-6) -> bool:
    """The same JSON, numbers equal within `rel` (docs/flops.json against the library's count)."""
    if isinstance(stored, dict) and isinstance(computed, dict):
        return stored.keys() == computed.keys() and all(close(stored[k], computed[k], rel) for k in stored)
    if isinstance(stored, list) and isinstance(computed, list):
        return len(stored) == len(computed) and all(close(s, c, rel) for s, c in zip(stored, computed))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (stored, computed)):
        return abs(stored - computed) <= rel * max(abs(stored), abs(computed))
    return stored == computed


def write_docs(root: pathlib.Path = REPO) -> list[str]:
    """Rewrite every doc whose sections changed (atomically); returns their paths."""
    from elit._io import atomic_write
    changed = []
    for doc in DOCS:
        text = (root / doc).read_text()
        new = fill_doc(text, render(root, doc))
        if new != text:
            with atomic_write(root / doc, "w") as f:
                f.write(new)
            changed.append(doc)
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming every stale section")
    ap.add_argument("--flops", action="store_true", help="recompute docs/flops.json with the library first")
    ap.add_argument("--root", type=pathlib.Path, default=REPO, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    root = args.root
    if args.check:
        stale = [] if close(json.loads((root / FLOPS).read_text()), compute_flops()) else \
            [f"{FLOPS} differs from the library's count (recompute it with --flops)"]
        stale += [f"{s} differs from its JSON" for s in stale_sections(root)]
        for line in stale:
            print(f"stale: {line}")
        if stale:
            print("run `python scripts/docs_tables.py` (after updating the JSON) to regenerate")
        return 1 if stale else 0
    if args.flops:
        write_entry(root / FLOPS, compute_flops())
    for doc in write_docs(root):
        print(f"rewrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
