"""What one elastic model buys (issue 26): the quality-compute front of one multi-budget ELIT against
the alternatives a user has for a given sampling cost: one DiT with fewer steps, Heun, TeaCache or CFG
off; DiTs of 3 and 2 blocks trained separately (about 50% and 33% of DiT's FLOPs per forward); and one
ELIT-MB with the same knobs plus the budget, per-step budget schedules and cheap CFG.

    python scripts/study_front.py --out runs/front --train --jobs 2        # the 8 trainings (hours; resumable)
    for k in 0 1; do python scripts/study_front.py --out runs/front --measure --shard $k/2 & done
    elit ref --data fmnist-test --out runs/front/ref.npz --threads 2       # a new machine, first and alone: the
    #   FID reference into the user cache (~26 min), which the shards then read (each would compute it, on 1 core)
    python scripts/study_front.py --out runs/front --fid --shard 0/1        # FID of the chosen rows
    python scripts/study_front.py --out runs/front --train --measure --fid --device cuda   # a GPU: all of it
    python scripts/study_front.py --out runs/front --report --publish docs/results
    python scripts/study_front.py --plan                                    # the rows and their cost, no work
    python scripts/study_front.py --measure-row 'elit-mb-s0:euler-40:budget-4:none:cache-off' \\
        --models docs/results/fashion-mnist-front/models        # re-measure one published row (JSON last)
    python scripts/study_front.py --out /tmp/f --smoke                     # a minute: tiny, every stage
    python scripts/study_front.py --out runs/front --save-progress          # before a session ends (see below)

Every stage resumes: `elit train` continues from its last checkpoint; a row (or a FID) already in
OUT/rows-*.json (OUT/fid-*.json) is not measured again; `--shard K/N` takes every N-th row.
A 2-core machine needs many sessions for the study, and a session's OUT does not outlive it:
`--save-progress` keeps the rows and each unfinished training's newest checkpoint in the repository
(PROGRESS) and publishes the finished models; every stage of the next session starts from them.
FD-FMNIST is measured for every row (its samples are kept in OUT/samples/ as uint8), FID for the rows on
some family's FD-FMNIST front, the best rows at the dominance levels, and enough others for 40.
Costs are counted, not estimated: FlopCounterMode over one image's whole sampling run (guidance passes
and TeaCache skips included).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import study_progress  # noqa: E402  (a sibling script: what the study carries between sessions)
# label -> (training config, overrides). The small DiTs keep DiT's width, heads and recipe and lose
# blocks: one forward costs 0.1263 and 0.0843 GFLOPs against DiT's 0.2523 (counted, attention
# included: 50% and 33%); a narrower DiT (width 40 / 32: 48% / 35%) would change the attention
# geometry as well, and depth is the knob a user turns first.
MODELS = {"dit": ("study-fmnist-dit", ()), "elit-mb": ("study-fmnist-elit-mb", ()),
          "dit-d3": ("study-fmnist-dit", ("model.depth=3",)), "dit-d2": ("study-fmnist-dit", ("model.depth=2",))}
NAMES = {"dit": "DiT", "elit-mb": "ELIT-MB", "dit-d3": "DiT, 3 blocks", "dit-d2": "DiT, 2 blocks"}
SEEDS = (0, 1)
MAX_STEPS = 8000
PUBLISHED_MODELS = "docs/results/fashion-mnist-front/models"   # the trained models, once published
# What a session could not finish, kept in the repository for the next one (whose OUT is gone): each
# unfinished training's newest checkpoint, and every row measured so far. See save_progress.
PROGRESS = "docs/results/fashion-mnist-front/progress"
NFES = (8, 12, 20, 40)                 # model evaluations of the ODE per image (Heun: 2 per step)
SCALE = 0.5                            # guidance lambda (w = 1 + lambda) for CFG and cheap CFG
CACHES = (0.1, 0.3)                    # TeaCache thresholds (elit.sampling.cache)
ELIT_BUDGETS = (1, 2, 4, 8, 16)
SCHEDULES = ("2@0.5,full", "1@0.8,4@0.4,full")    # low budget on the noisy steps, then full
LEVELS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0, 9.0)   # GFLOPs per image of the dominance table
# The families a user chooses between; each is the rows it may use (nested: TeaCache adds to DiT).
FAMILIES = {
    "DiT, fewer steps": lambda r: r["model"] == "dit" and r["cache"] is None,
    "DiT + TeaCache": lambda r: r["model"] == "dit",
    "DiTs of 6/3/2 blocks": lambda r: r["model"] in ("dit", "dit-d3", "dit-d2"),
    "ELIT-MB": lambda r: r["model"] == "elit-mb",
}
METRICS = ("fd_fmnist", "fid")
MIN_FID_ROWS = 40
# --smoke: every stage in minutes (tiny models; the constants above, shrunk)
SMOKE = {"MAX_STEPS": 4, "MIN_FID_ROWS": 3, "CACHES": (0.3,)}


# ---------------------------------------------------------------------- settings and rows
def setting(sampler="euler", nfe=40, budget=None, schedule=None, guidance="none", weak_budget=None, cache=None):
    return dict(sampler=sampler, nfe=nfe, budget=budget, schedule=schedule, guidance=guidance,
                scale=0.0 if guidance == "none" else SCALE, weak_budget=weak_budget, cache=cache)


def grid(label: str, nfes=NFES) -> list[dict]:
    """Seed 0's full grid for one model: Euler and Heun at every NFE, TeaCache on Euler at the two
    largest NFEs, CFG on Euler; ELIT-MB also every budget, the schedules, and cheap CFG (weak J~ = 1)."""
    rows = [setting(s, n) for s in ("euler", "heun") for n in nfes]
    rows += [setting("euler", n, cache=c) for n in nfes[-2:] for c in CACHES]
    rows += [setting("euler", n, guidance="cfg") for n in nfes]
    if label == "elit-mb":
        low = ELIT_BUDGETS[0]
        rows += [setting(s, n, budget=b) for b in ELIT_BUDGETS[:-1] for s in ("euler", "heun") for n in nfes]
        rows += [setting("euler", n, schedule=sc) for sc in SCHEDULES for n in nfes]
        rows += [setting("euler", n, budget=4, cache=c) for n in nfes[-2:] for c in CACHES]
        rows += [setting("euler", n, budget=b, guidance="cfg") for b in (4, low) for n in sorted({nfes[0], nfes[max(0, len(nfes) - 2)]})]
        rows += [setting("euler", n, budget=b, guidance="ccfg", weak_budget=low) for b in (None, 8, 4)
                 for n in nfes]
    return rows


def sample_options(s: dict) -> dict:
    """elit.sample keywords of a setting."""
    return dict(steps=s["nfe"] // (2 if s["sampler"] == "heun" else 1), sampler=s["sampler"], budget=s["budget"],
                schedule=s["schedule"], guidance=s["guidance"], scale=None if s["guidance"] == "none" else s["scale"],
                weak_budget=s["weak_budget"], cache=s["cache"])


def row_id(model: str, seed: int, s: dict) -> str:
    """'elit-mb-s0:euler-40:budget-4:ccfg-0.5-weak-1:cache-off' (parse_row_id reads it back)."""
    shape = f"schedule-{s['schedule']}" if s["schedule"] else f"budget-{s['budget'] or 'full'}"
    guide = s["guidance"] if s["guidance"] == "none" else f"{s['guidance']}-{s['scale']:g}" + (
        f"-weak-{s['weak_budget']}" if s["weak_budget"] is not None else "")
    cache = "cache-off" if s["cache"] is None else f"cache-{s['cache']:g}"
    return ":".join([f"{model}-s{seed}", f"{s['sampler']}-{s['nfe']}", shape, guide, cache])


def parse_row_id(text: str) -> tuple[str, int, dict]:
    try:
        run, solver, shape, guide, cache = text.split(":")
        model, seed = run.rsplit("-s", 1)
        sampler, nfe = solver.split("-")
        kind, value = shape.split("-", 1)
        g = guide.split("-")
        s = setting(sampler, int(nfe), budget=None if kind == "schedule" or value == "full" else int(value),
                    schedule=value if kind == "schedule" else None, guidance=g[0],
                    weak_budget=int(g[3]) if len(g) > 3 else None,
                    cache=None if cache == "cache-off" else float(cache.split("-", 1)[1]))
        if g[0] != "none":
            s["scale"] = float(g[1])
        if model not in MODELS:
            raise ValueError(model)
        return model, int(seed), s
    except (ValueError, IndexError):
        raise SystemExit(f"cannot read row id {text!r}; expected e.g. "
                         f"'elit-mb-s0:euler-40:budget-4:none:cache-off' (see the JSON's `id` column)") from None


def plan(seed0_rows: list[dict], seeds=SEEDS, nfes=NFES) -> list[tuple[str, int, dict]]:
    """Seed 0: every model's full grid, cheapest first. Other seeds: the settings on some family's
    FD-FMNIST front in seed 0 (known once seed 0 is measured), so the seed range covers the fronts."""
    first = [(label, seeds[0], s) for label in MODELS for s in grid(label, nfes)]
    front = {r["id"].split(":", 1)[1] for name in FAMILIES
             for r in pareto(family_rows(seed0_rows, name, seeds[0]), "fd_fmnist")}
    return first + [(label, seed, s) for seed in seeds[1:] for label, _, s in first
                    if row_id(label, seeds[0], s).split(":", 1)[1] in front]


# ---------------------------------------------------------------------- measuring
def counted_cost(model, s: dict) -> tuple[float, float]:
    """(GFLOPs, forward passes) per image of one whole sampling run, counted by FlopCounterMode over
    seed 0 alone: guidance passes and TeaCache skips count as they happen (skips depend on t only,
    so they are the same in every batch). SDPA is counted under its math kernel, as elit.cost does."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    from elit.sampling import sample
    passes = [0]
    hook = model.register_forward_pre_hook(lambda module, args: passes.__setitem__(0, passes[0] + args[0].shape[0]))
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            sample(model, [0], batch_size=1, **sample_options(s))
    finally:
        hook.remove()
    return counter.get_total_flops() / 1e9, float(passes[0])


def measure(label: str, seed: int, s: dict, model, plain, num: int, batch_size: int, extractors: dict,
            refs: dict, samples_dir: pathlib.Path | None, compiled: bool) -> dict:
    """Sample `num` images (seeds 0..num-1, label = seed % 10) at one setting, FD-FMNIST against the
    test set; the images go to samples_dir for a later FID. `plain`: the same model uncompiled, for
    the FLOP count."""
    import numpy as np
    from elit.eval.metrics.stats import RunningStats, frechet_distance
    from elit.sampling.solvers import iter_batches
    from elit.viz import to_uint8
    start = time.perf_counter()
    ext = extractors["fmnist"]
    running, kept = RunningStats(ext.dim), []
    for _, _, images in iter_batches(model, range(num), batch_size=batch_size, **sample_options(s)):
        batch = to_uint8(images)
        running.update(ext(batch))
        kept.append(batch)
    from elit.eval.metrics.stats import FeatureStats
    gen = FeatureStats.from_running(running, ext.name, ext.protocol)
    fd = frechet_distance(gen.mu, gen.sigma, refs["fmnist"].mu, refs["fmnist"].sigma, method="eigh")
    ident = row_id(label, seed, s)
    if samples_dir is not None:
        from elit._io import atomic_write
        samples_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(samples_dir / (ident.replace(":", "__") + ".npy")) as f:
            np.save(f, np.concatenate(kept))
    gflops, passes = counted_cost(plain, s)
    return {"id": ident, "model": label, "seed": seed, **s, "steps": sample_options(s)["steps"],
            "forward_passes": passes, "gflops_per_image": round(gflops, 6), "fd_fmnist": fd, "fid": None,
            "num_samples": num, "compiled": compiled, "seconds": round(time.perf_counter() - start, 1),
            "command": measure_command(ident, compiled)}


def measure_command(ident: str, compiled: bool, fid: bool = False) -> str:
    args = ["python", "scripts/study_front.py", "--measure-row", ident, "--models", "docs/results/fashion-mnist-front/models"]
    return shlex.join(args + (["--with-fid"] if fid else []) + (["--compile"] if compiled else []))


def fid_of(images, extractors: dict, refs: dict) -> float:
    from elit.eval.metrics.compute import extract_stats
    from elit.eval.metrics.stats import frechet_distance
    gen = extract_stats(images, {"inception": extractors["inception"]}, batch_size=100, progress=False)["inception"]
    return frechet_distance(gen.mu, gen.sigma, refs["inception"].mu, refs["inception"].sigma, method="eigh")


def references(nets, ref_num: int | None, extractors: dict) -> dict:
    """The Fashion-MNIST test set's statistics per network (cached in the user cache after the first
    time: the Inception pass over 10,000 images takes ~45 min on one core)."""
    from elit.eval.metrics.compute import reference_stats
    return reference_stats("fmnist-test", {n: extractors[n] for n in nets}, num=ref_num, progress=True)[0]


def extractors_for(nets, device: str = "cpu") -> dict:
    from elit.eval.metrics.compute import get_extractor
    return {n: get_extractor(n, device=device) for n in nets}


def load_models(folder_of, wanted, compile_: bool, device: str = "cpu") -> dict:
    """(label, seed) -> (model to sample with on `device`, the same uncompiled on the CPU for FLOP
    counting: the count does not depend on where the model runs)."""
    from elit.hub import load_pretrained
    out = {}
    for label, seed in sorted(wanted):
        folder = folder_of(label, seed)
        plain = load_pretrained(folder)
        model = plain if device == "cpu" and not compile_ else load_pretrained(folder, device=device)
        if compile_:
            from elit.model import compile_blocks
            model = compile_blocks(model)
        out[(label, seed)] = (model, plain)
    return out


# ---------------------------------------------------------------------- rows on disk
def load_json_files(out: pathlib.Path, pattern: str) -> list:
    items = []
    for path in sorted(out.glob(pattern)):
        items += json.loads(path.read_text())
    return items


def load_rows(out: pathlib.Path) -> list[dict]:
    """Every measured row (all shards and rows carried over from earlier sessions), one per id, with
    its FID when measured."""
    rows = {r["id"]: r for r in load_json_files(out, "rows-*.json")}
    for f in load_json_files(out, "fid-*.json"):
        if f["id"] in rows:
            rows[f["id"]]["fid"] = f["fid"]
            rows[f["id"]]["command"] = measure_command(f["id"], rows[f["id"]]["compiled"], fid=True)
    return list(rows.values())


def append_row(path: pathlib.Path, row: dict) -> None:
    from elit._io import write_json
    rows = json.loads(path.read_text()) if path.is_file() else []
    write_json(path, rows + [row])


# ---------------------------------------------------------------------- analysis
def family_rows(rows: list[dict], family: str, seed: int) -> list[dict]:
    return [r for r in rows if r["seed"] == seed and FAMILIES[family](r)]


def pareto(rows: list[dict], metric: str) -> list[dict]:
    """The rows no cheaper-or-equal row beats on `metric` (lower is better), cheapest first."""
    front, best = [], math.inf
    for r in sorted((r for r in rows if r.get(metric) is not None), key=lambda r: (r["gflops_per_image"], r[metric])):
        if r[metric] < best:
            front.append(r)
            best = r[metric]
    return front


def best_within(rows: list[dict], metric: str, level: float) -> dict | None:
    fitting = [r for r in rows if r.get(metric) is not None and r["gflops_per_image"] <= level]
    return min(fitting, key=lambda r: (r[metric], r["gflops_per_image"])) if fitting else None


def front_and_levels(fam: list[dict]) -> list[str]:
    """A family's FD-FMNIST front and its best row at every cost level."""
    return ([r["id"] for r in pareto(fam, "fd_fmnist")]
            + [b["id"] for level in LEVELS if (b := best_within(fam, "fd_fmnist", level))])


def fid_choice(rows: list[dict], seeds=SEEDS) -> list[str]:
    """The row ids that get a FID, most telling first (a session may end before all are done): in each
    seed, ELIT-MB's FD-FMNIST front and its best row at every level, the rows that answer the paper's
    claim (budget_vs_steps), then the other families' fronts and best rows; then the rest of seed 0's
    rows, spread over the cost range, up to MIN_FID_ROWS."""
    chosen = []
    claim = claim_rows(rows)
    for seed in seeds:
        chosen += front_and_levels(family_rows(rows, "ELIT-MB", seed))
        chosen += [r["id"] for r in claim if r["seed"] == seed]
        for family in FAMILIES:
            if family != "ELIT-MB":
                chosen += front_and_levels(family_rows(rows, family, seed))
    chosen = list(dict.fromkeys(chosen))
    rest = sorted((r for r in rows if r["seed"] == seeds[0] and r["id"] not in chosen), key=lambda r: r["gflops_per_image"])
    need = MIN_FID_ROWS - len(chosen)
    if need > 0 and rest:
        step = max(1, len(rest) // need)
        chosen += [r["id"] for r in rest[::step][:need]]
    return chosen


def shorthand(r: dict) -> str:
    """A row's setting in a few characters: 'heun 20, J~=4, ccfg w1, cache 0.1'."""
    parts = [f"{r['sampler']} {r['nfe']}"]
    if r["schedule"]:
        parts.append(f"sched {r['schedule']}")
    elif r["budget"] is not None:
        parts.append(f"J~={r['budget']}")
    if r["guidance"] != "none":
        parts.append(r["guidance"] + (f" w{r['weak_budget']}" if r["weak_budget"] is not None else ""))
    if r["cache"] is not None:
        parts.append(f"cache {r['cache']:g}")
    return (NAMES[r["model"]] + ": " if r["model"] not in ("dit", "elit-mb") else "") + ", ".join(parts)


def dominance_table(rows: list[dict], metric: str, seeds=SEEDS) -> str:
    """At each GFLOP level: each family's best row within it, per seed, and who wins by how much."""
    names = list(FAMILIES)
    head = ["GFLOPs/img <=", *names, "winner (margin to the next)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in LEVELS:
        cells, wins = [f"{level:g}"], []
        per_seed = {}
        for seed in seeds:
            per_seed[seed] = {f: best_within(family_rows(rows, f, seed), metric, level) for f in names}
        for f in names:
            vals = [per_seed[s][f] for s in seeds]
            cells.append(" / ".join("-" if v is None else f"{v[metric]:.2f}" for v in vals)
                         + (f" ({shorthand(vals[0])})" if vals[0] else ""))
        for seed in seeds:
            # The nested DiT families are one user's options: the winner is named among the distinct
            # choices (DiT alone; DiT + TeaCache; the zoo of DiTs; ELIT-MB) by its best row.
            ranked = sorted((b[metric], f) for f, b in per_seed[seed].items() if b is not None)
            if not ranked:
                wins.append(f"s{seed}: -")
                continue
            value, winner = ranked[0]
            others = [v for v, f in ranked if per_seed[seed][f]["id"] != per_seed[seed][winner]["id"]]
            margin = f" by {others[0] - value:.2f} ({(others[0] - value) / others[0]:.0%})" if others else ""
            tied = [f for v, f in ranked if per_seed[seed][f]["id"] == per_seed[seed][winner]["id"]]
            wins.append(f"s{seed}: {' = '.join(tied)}{margin}")
        lines.append("| " + " | ".join(cells + ["; ".join(wins)]) + " |")
    return "\n".join(lines) + "\n"


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear in log(x) between measured (GFLOPs, metric) points; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            f = 0.0 if x1 == x0 else (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + f * (y1 - y0)
    return None


def claim_base(r: dict) -> bool:
    """The rows of the paper's claim: ELIT-MB, Euler, unguided, no cache, one budget for every step."""
    return (r["model"] == "elit-mb" and r["sampler"] == "euler" and r["guidance"] == "none"
            and r["cache"] is None and r["schedule"] is None)


def claim_rows(rows: list[dict]) -> list[dict]:
    """The rows budget_vs_steps reads: the full budget at any NFE, or a lower one at the most NFE."""
    base = [r for r in rows if claim_base(r)]
    most = max((r["nfe"] for r in base), default=None)
    return [r for r in base if r["budget"] is None or (r["budget"] in ELIT_BUDGETS[:-1] and r["nfe"] == most)]


def budget_vs_steps(rows: list[dict], metric: str, seeds=SEEDS) -> tuple[str, list[tuple]]:
    """The paper's claim, within ELIT-MB (claim_base rows): each lower budget at the most steps, against
    the full budget with fewer steps at the same GFLOPs (interpolated between the measured step counts).
    Returns (markdown table, [(budget, seed, lower-budget value, fewer-steps value)])."""
    lines = ["| J~ | NFE | GFLOPs/img | " + " | ".join(f"seed {s}: lower budget / fewer steps" for s in seeds) + " |",
             "|---|---|---|" + "---|" * len(seeds)]
    verdicts = []
    base = lambda r: claim_base(r) and r.get(metric) is not None   # noqa: E731
    nfe = max((r["nfe"] for r in rows if base(r)), default=None)
    for b in ELIT_BUDGETS[:-1]:
        cells = []
        gflops = None
        for seed in seeds:
            full = [(r["gflops_per_image"], r[metric]) for r in rows if base(r) and r["seed"] == seed and r["budget"] is None]
            low = [r for r in rows if base(r) and r["seed"] == seed and r["budget"] == b and r["nfe"] == nfe]
            if not low:
                cells.append("-")
                continue
            gflops = low[0]["gflops_per_image"]
            other = interpolate(full, gflops)
            cells.append(f"{low[0][metric]:.2f} / " + ("-" if other is None else f"{other:.2f}"))
            if other is not None:
                verdicts.append((b, seed, low[0][metric], other))
        if gflops is not None:
            lines.append(f"| {b} | {nfe} | {gflops:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", verdicts


def claim_answer(rows: list[dict]) -> str:
    """One sentence per metric from budget_vs_steps's verdicts."""
    out = []
    for metric in METRICS:
        _, verdicts = budget_vs_steps(rows, metric)
        if not verdicts:
            out.append(f"- {METRIC_NAMES[metric]}: not measured yet.")
            continue
        wins = [(b, s) for b, s, low, steps in verdicts if low < steps]
        budgets = sorted({b for b, _ in wins})
        answer = ("yes" if len(wins) == len(verdicts) else "no" if not wins else "partly")
        where = f" (lower budget better at J~ = {', '.join(map(str, budgets))}: {len(wins)} of {len(verdicts)} " \
                f"budget-seed pairs)" if wins and len(wins) < len(verdicts) else f" ({len(wins)} of {len(verdicts)} pairs)"
        out.append(f"- {METRIC_NAMES[metric]}: **{answer}**{where}.")
    return "\n".join(out) + "\n"


METRIC_NAMES = {"fd_fmnist": "FD-FMNIST", "fid": "FID"}


def spans(levels: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in levels)


def versus(rows: list[dict], metric: str, seeds=SEEDS) -> str:
    """ELIT-MB against each alternative, level by level (the dominance table's columns, read as the
    issue asks): where its best row beats the rival's best in every seed measured, where it loses in
    every seed, where the seeds disagree, where only one of them has a setting that cheap, and where
    both have one but the metric is not measured on one side yet."""
    out = []
    ours = {seed: family_rows(rows, "ELIT-MB", seed) for seed in seeds}
    cheap = lambda fam, level: any(r["gflops_per_image"] <= level for rs in fam.values() for r in rs)  # noqa: E731
    for rival in (f for f in FAMILIES if f != "ELIT-MB"):
        won, lost, split, rival_only, elit_only, unmeasured = [], [], [], [], [], []
        theirs = {seed: family_rows(rows, rival, seed) for seed in seeds}
        for level in LEVELS:
            gains = []
            for seed in seeds:
                e = best_within(ours[seed], metric, level)
                o = best_within(theirs[seed], metric, level)
                if e and o:     # > 0: ELIT-MB better; the share of the loser's value, as the dominance table
                    gains.append((o[metric] - e[metric]) / max(o[metric], e[metric]))
            has_e, has_o = cheap(ours, level), cheap(theirs, level)
            if gains and all(g > 0 for g in gains):
                won.append((level, min(gains), max(gains)))
            elif gains and all(g < 0 for g in gains):
                lost.append((level, min(-g for g in gains), max(-g for g in gains)))
            elif gains:
                split.append(level)
            elif has_o and not has_e:
                rival_only.append(level)
            elif has_e and not has_o:
                elit_only.append(level)
            elif has_e:     # both have a setting that cheap, one of them without this metric yet
                unmeasured.append(level)
        parts = []
        for verb, found in (("better", won), ("worse", lost)):
            if found:
                low, high = min(f[1] for f in found), max(f[2] for f in found)
                by = f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%}-{high:.0%}"
                parts.append(f"{verb} at <= {spans([f[0] for f in found])} GF (by {by})")
        if split:
            parts.append(f"tied or the seeds disagree at <= {spans(split)} GF")
        if rival_only:
            parts.append(f"no ELIT-MB setting that cheap at <= {spans(rival_only)} GF (the rival has one)")
        if elit_only:
            parts.append(f"only ELIT-MB has a setting at <= {spans(elit_only)} GF")
        if unmeasured:
            parts.append(f"not measured yet at <= {spans(unmeasured)} GF (one side has no {METRIC_NAMES[metric]} that cheap)")
        out.append(f"- ELIT-MB vs **{rival}**: " + ("; ".join(parts) if parts else "not measured yet") + ".")
    return "\n".join(out) + "\n"


def plan_table(rows: list[dict], seed: int = 0) -> str:
    """What `elit plan` picks for ELIT-MB at the dominance levels, reading the front JSON (the same
    functions the command calls), per metric."""
    from elit.errors import UserError
    from elit.sampling.planner import choose, describe, front_table
    lines = ["| GFLOPs/img <= | " + " | ".join(f"{METRIC_NAMES[m]}: setting (value)" for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for level in LEVELS:
        cells = []
        for metric in METRICS:
            try:
                table = front_table(rows, "elit-mb", seed, metric)
                best = choose(table, target_gflops=level)
                cells.append(f"{describe(best)} ({best['value']:.2f}, {best['gflops_per_image']:.2f} GF)")
            except UserError as e:       # a level below every row, a metric not measured: the planner's words
                cells.append("- (" + str(e).split(";")[0] + ")")     # its first clause, brackets closed
        lines.append(f"| {level:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plan_command(level: float, metric: str, seed: int = 0) -> str:
    return (f"elit plan --model docs/results/fashion-mnist-front/models/elit-mb-s{seed} --table "
            f"docs/results/fashion-mnist-front.json --table-model elit-mb --table-seed {seed} --metric {metric} "
            f"--target-gflops {level:g}")


def plot(rows: list[dict], metric: str, path: pathlib.Path, seeds=SEEDS) -> None:
    """Metric vs GFLOPs per image: every row as a faint dot, each family's front as a line (seed 0
    solid, seed 1 dashed, the band between them shaded). The DiT families are nested and their fronts
    often coincide, so each is drawn wider than the one it contains and beneath it: where they share
    a stretch, every family's colour still shows as an edge."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    nested = [f for f in FAMILIES if f != "ELIT-MB"]
    for i, family in enumerate(FAMILIES):
        color = f"C{i}"
        width = 1.6 + 1.3 * (len(nested) - 1 - nested.index(family)) if family in nested else 1.6
        fronts = []
        for k, seed in enumerate(seeds):
            fam = family_rows(rows, family, seed)
            pts = [(r["gflops_per_image"], r[metric]) for r in fam if r.get(metric) is not None]
            if k == 0 and pts:
                ax.scatter(*zip(*pts), s=6, color=color, alpha=0.25)
            front = [(r["gflops_per_image"], r[metric]) for r in pareto(fam, metric)]
            if front:
                ax.step(*zip(*front), where="post", color=color, ls="-" if k == 0 else "--", lw=width, zorder=2 + i,
                        label=f"{family} (seed {seed})")
                fronts.append(front)
        if len(fronts) == 2:
            xs = sorted({x for f in fronts for x, _ in f})
            at = lambda front, x: min((y for fx, y in front if fx <= x), default=None)   # noqa: E731
            band = [(x, at(fronts[0], x), at(fronts[1], x)) for x in xs]
            band = [b for b in band if None not in b]
            if band:
                ax.fill_between([b[0] for b in band], [min(b[1:]) for b in band], [max(b[1:]) for b in band],
                                step="post", color=color, alpha=0.12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GFLOPs per image, whole sampling run (counted, 2 x multiply-adds)")
    ax.set_ylabel(f"{METRIC_NAMES[metric]} (lower is better)")
    ax.set_title(f"Fashion-MNIST: {METRIC_NAMES[metric]} vs sampling cost; lines: Pareto fronts")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- the doc
PUBLISHED_KEYS = ("id", "model", "seed", "sampler", "nfe", "steps", "budget", "schedule", "guidance", "scale",
                  "weak_budget", "cache", "forward_passes", "gflops_per_image", "fd_fmnist", "fid", "num_samples",
                  "compiled", "command")


def published(rows: list[dict]) -> list[dict]:
    order = list(MODELS)
    return [{k: r[k] for k in PUBLISHED_KEYS} for r in
            sorted(rows, key=lambda r: (r["seed"], order.index(r["model"]), r["gflops_per_image"], r["id"]))]


SECTION_NAMES = ("front-summary", "front-claim", *(f"front-{part}-{m}" for m in METRICS
                                                    for part in ("dominance", "budget-vs-steps", "versus")),
                 "front-plan", "front-fronts", "front-plots")


def progress_line(rows: list[dict], seeds=SEEDS) -> str:
    """Whether the study is finished: the planned rows not measured and the chosen rows without FID,
    so a reader of a doc published between sessions knows its tables may still change."""
    measured = {r["id"] for r in rows}
    nfes = tuple(sorted({r["nfe"] for r in rows}))     # the study's NFEs (--smoke measures fewer)
    first = [r for r in rows if r["seed"] == seeds[0]]
    planned = [row_id(label, seed, s) for label, seed, s in plan(first, seeds, nfes)]
    missing = sum(i not in measured for i in planned)
    fid = {r["id"]: r["fid"] for r in rows}
    chosen = fid_choice(rows, seeds)
    no_fid = sum(fid[i] is None for i in chosen)
    if not missing and not no_fid:
        return f"Complete: all {len(planned)} planned rows measured, FID for all {len(chosen)} chosen rows.\n"
    return (f"**In progress**: {missing} of the {len(planned)} planned rows not measured yet, {no_fid} of the "
            f"{len(chosen)} rows chosen for FID without one; the tables and answers below may still change.\n")


def doc_sections(rows: list[dict]) -> dict[str, str]:
    """The generated parts of docs/results/fashion-mnist-front.md, by marker name."""
    if not rows:   # the links below would lead nowhere before the first publish
        return {name: "Not measured yet.\n" if name == "front-summary" else "" for name in SECTION_NAMES}
    fids = sum(r["fid"] is not None for r in rows)
    counts = {m: sum(r["model"] == m for r in rows) for m in MODELS}
    summary = (f"{len(rows)} rows ({', '.join(f'{NAMES[m]} {n}' for m, n in counts.items())}; "
               f"seeds {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}), {fids} with FID, in "
               f"[fashion-mnist-front.json](fashion-mnist-front.json); each row's `command` re-measures it from "
               f"the published models in [fashion-mnist-front/models/](fashion-mnist-front/models/) and prints "
               f"it as JSON.\n\n" + progress_line(rows))
    sections = {"front-summary": summary, "front-claim": claim_answer(rows)}
    for metric in METRICS:
        sections[f"front-dominance-{metric}"] = dominance_table(rows, metric)
        sections[f"front-budget-vs-steps-{metric}"] = budget_vs_steps(rows, metric)[0]
        sections[f"front-versus-{metric}"] = versus(rows, metric)
    sections["front-plan"] = plan_table(rows) + "\n```bash\n" + plan_command(LEVELS[3], "fd_fmnist") + "\n```\n"
    fronts = []
    for metric in METRICS:
        for family in FAMILIES:
            for seed in SEEDS:
                f = pareto(family_rows(rows, family, seed), metric)
                if f:
                    fronts.append(f"- {METRIC_NAMES[metric]}, {family}, seed {seed}: " + "; ".join(
                        f"{r['gflops_per_image']:.2f} GF {r[metric]:.2f} ({shorthand(r)})" for r in f))
    sections["front-fronts"] = "\n".join(fronts) + "\n"
    sections["front-plots"] = "".join(f"![{METRIC_NAMES[m]} vs GFLOPs](fashion-mnist-front/front-{m}.png)\n"
                                      for m in METRICS if any(r[m] is not None for r in rows))
    return sections


def report(out: pathlib.Path, publish: str | None) -> list[dict]:
    from elit._io import atomic_write
    from docs_tables import fill_doc
    rows = published(load_rows(out))
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    files = {rep / "fashion-mnist-front.json": (json.dumps(rows, indent=1) + "\n").encode()}
    for metric in METRICS:
        if any(r[metric] is not None for r in rows):
            plot(rows, metric, rep / f"front-{metric}.png")
    sections = doc_sections(rows)
    files[rep / "sections.md"] = "\n".join(f"## {k}\n\n{v}" for k, v in sections.items()).encode()
    for path, content in files.items():
        with atomic_write(path) as f:
            f.write(content)
    print(sections["front-summary"] + sections["front-claim"], end="")
    if publish:
        dest = pathlib.Path(publish)
        doc = dest / "fashion-mnist-front.md"
        if not doc.is_file():
            raise SystemExit(f"[publish] {doc} does not exist: --publish takes the folder that holds it (docs/results)")
        text = fill_doc(doc.read_text(), sections)          # fails before anything is written
        copies = {dest / "fashion-mnist-front.json": files[rep / "fashion-mnist-front.json"], doc: text.encode()}
        copies.update({dest / "fashion-mnist-front" / p.name: p.read_bytes() for p in rep.glob("front-*.png")})
        for path, content in copies.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                f.write(content)
        publish_models(out, dest / "fashion-mnist-front" / "models", {(r["model"], r["seed"]) for r in rows})
        print(f"[publish] {dest}: {len(rows)} rows")
    return rows


def publish_models(out: pathlib.Path, dest: pathlib.Path, runs) -> None:
    """The trained EMA models the rows used (config.json + model.safetensors, 0.7-2.2 MB each)."""
    for label, seed in sorted(runs):
        study_progress.publish_model(out / "runs" / f"{label}-s{seed}", dest / f"{label}-s{seed}")


# ---------------------------------------------------------------------- stages
def reuse_published(out: pathlib.Path, published: pathlib.Path, seeds) -> None:
    """A published model (trained in an earlier session) is the run's result: not trained again."""
    study_progress.reuse_published(out / "runs", published, [f"{label}-s{seed}" for seed in seeds for label in MODELS])


def save_progress(out: pathlib.Path, dest: pathlib.Path, models: pathlib.Path) -> None:
    """Keep what the next session needs of OUT in `dest` (a folder in the repository): every row
    measured so far, FID included (rows.json), and the newest checkpoint of each unfinished training;
    a finished training's model is published to `models` instead (see study_progress)."""
    rows = sorted(load_rows(out), key=lambda r: r["id"])
    study_progress.keep_rows(rows, dest)
    study_progress.keep_runs(out / "runs", dest / "runs", models)
    print(f"[progress] {len(rows)} rows kept in {dest / 'rows.json'}; finished models in {models}", flush=True)


def restore_progress(out: pathlib.Path, src: pathlib.Path) -> None:
    """What save_progress kept, back into OUT: the rows count as measured, a kept checkpoint resumes."""
    study_progress.restore_rows(src, out)
    study_progress.restore_runs(src / "runs", out / "runs")


def train(out: pathlib.Path, jobs: int, seeds, overrides: list[str]) -> None:
    """Train (or resume) every (model, seed) with the real CLI, `jobs` at a time, one thread each."""
    pending = [(f"{label}-s{seed}", [sys.executable, "-m", "elit", "train", "--config", config, "--out",
                                     str(out / "runs" / f"{label}-s{seed}"), f"train.max_steps={MAX_STEPS}",
                                     f"train.seed={seed}", "log.ckpt_every=1000", "log.keep_last=8",
                                     "system.threads=1", "log.progress=false", *extra, *overrides])
               for seed in seeds for label, (config, extra) in MODELS.items()
               if not (out / "runs" / f"{label}-s{seed}" / "model" / "model.safetensors").is_file()]
    running = {}
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd = pending.pop(0)
            print("[train] " + " ".join(cmd[2:]), flush=True)
            running[name] = subprocess.Popen(cmd)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    for other in running.values():
                        other.terminate()
                    raise SystemExit(f"[train] {name} failed (exit {proc.returncode}); rerun to resume it")


def measure_stage(out: pathlib.Path, args) -> None:
    """FD-FMNIST for every planned row whose model is trained, this shard's share. Seed 0's rows
    decide which settings the other seeds get, so the plan is made again until nothing is left."""
    import torch
    torch.set_num_threads(args.threads)
    extractors = refs = None
    models = {}
    while True:
        rows = load_rows(out)
        done = {r["id"] for r in rows}
        ready = {(label, seed) for label in MODELS for seed in args.seeds
                 if (out / "runs" / f"{label}-s{seed}" / "model" / "model.safetensors").is_file()}
        first = [r for r in rows if r["seed"] == args.seeds[0]]
        todo = [(label, seed, s) for label, seed, s in plan(first, args.seeds, args.nfes)
                if (label, seed) in ready and row_id(label, seed, s) not in done]
        mine = todo[args.shard::args.shards]
        print(f"[measure] {len(done)} rows measured, {len(todo)} to go ({len(ready)} models trained); "
              f"shard {args.shard}/{args.shards} takes {len(mine)}", flush=True)
        if not mine:
            return
        if extractors is None:
            extractors = extractors_for(["fmnist"], args.device)
            refs = references(["fmnist"], args.ref_num, extractors)
        wanted = {(label, seed) for label, seed, _ in mine} - set(models)
        models.update(load_models(lambda m, k: out / "runs" / f"{m}-s{k}" / "model", wanted, args.compile, args.device))
        for k, (label, seed, s) in enumerate(mine):
            if row_id(label, seed, s) in {r["id"] for r in load_rows(out)}:
                continue        # another shard's replanned share took it
            model, plain = models[(label, seed)]
            with torch.no_grad():
                row = measure(label, seed, s, model, plain, args.num, args.batch_size, extractors, refs,
                              out / "samples", args.compile)
            append_row(out / f"rows-{args.shard}.json", row)
            print(f"[{k + 1}/{len(mine)}] {row['id']}: FD-FMNIST {row['fd_fmnist']:.2f}, "
                  f"{row['gflops_per_image']:.3f} GFLOPs/img, {row['seconds']:.0f} s", flush=True)


def fid_stage(out: pathlib.Path, args) -> None:
    """FID of the chosen rows (fid_choice), from the samples kept by the measure stage."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    rows = {r["id"]: r for r in load_rows(out)}
    # Shards split the whole choice, not what is left of it: one that starts after another has
    # finished rows would otherwise split a shorter list and leave some rows to no one.
    chosen = fid_choice(list(rows.values()), args.seeds)
    mine = [i for i in chosen[args.shard::args.shards] if rows[i]["fid"] is None]
    print(f"[fid] {sum(r['fid'] is not None for r in rows.values())} rows have FID, "
          f"{sum(rows[i]['fid'] is None for i in chosen)} chosen to go; "
          f"shard {args.shard}/{args.shards} takes {len(mine)}", flush=True)
    if not mine:
        return
    extractors = extractors_for(["inception"], args.device)
    refs = references(["inception"], args.ref_num, extractors)
    models = {}
    for k, ident in enumerate(mine):
        path = out / "samples" / (ident.replace(":", "__") + ".npy")
        start = time.perf_counter()
        if path.is_file():
            images = np.load(path)
        else:   # measured in an earlier session (carried over by save_progress): the same seeds again
            images = resample(out, ident, rows[ident]["num_samples"], args, models)
        value = fid_of(images, extractors, refs)
        append_row(out / f"fid-{args.shard}.json", {"id": ident, "fid": value, "num_samples": len(images)})
        print(f"[{k + 1}/{len(mine)}] {ident}: FID {value:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)


def sample_images(model, s: dict, num: int, batch_size: int):
    """uint8 images of seeds 0..num-1 at setting `s`, as a row measures them."""
    import numpy as np
    import torch
    from elit.sampling.solvers import iter_batches
    from elit.viz import to_uint8
    with torch.no_grad():
        return np.concatenate([to_uint8(x) for _, _, x in iter_batches(model, range(num), batch_size=batch_size,
                                                                        **sample_options(s))])


def resample(out: pathlib.Path, ident: str, num: int, args, models: dict):
    """The images of a row whose samples file is gone, sampled again (seeds 0..num-1, as measured)."""
    label, seed, s = parse_row_id(ident)
    if (label, seed) not in models:
        models.update(load_models(lambda m, k: out / "runs" / f"{m}-s{k}" / "model", {(label, seed)},
                                  args.compile, args.device))
    return sample_images(models[(label, seed)][0], s, num, args.batch_size)


def measure_row(args) -> int:
    """Re-measure one published row from the published models; print it as JSON on the last line."""
    import torch
    torch.set_num_threads(args.threads)
    label, seed, s = parse_row_id(args.measure_row)
    nets = ["fmnist", "inception"] if args.with_fid else ["fmnist"]
    extractors = extractors_for(nets, args.device)
    refs = references(nets, args.ref_num, extractors)
    models = pathlib.Path(args.models)
    model, plain = load_models(lambda m, k: models / f"{m}-s{k}", {(label, seed)}, args.compile, args.device)[(label, seed)]
    with torch.no_grad():
        row = measure(label, seed, s, model, plain, args.num, args.batch_size, extractors, refs, None, args.compile)
    if args.with_fid:
        row["fid"] = fid_of(sample_images(model, s, args.num, args.batch_size), extractors, refs)
    row.pop("seconds")
    print(json.dumps({k: row[k] for k in PUBLISHED_KEYS if k != "command"}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="study folder (runs/, samples/, rows-*.json, report/)")
    ap.add_argument("--train", action="store_true", help="train (or resume) the 8 models")
    ap.add_argument("--measure", action="store_true", help="FD-FMNIST rows (this shard)")
    ap.add_argument("--fid", action="store_true", help="FID of the chosen rows (this shard)")
    ap.add_argument("--report", action="store_true", help="OUT/report: JSON, plots, the doc's sections")
    ap.add_argument("--publish", metavar="DIR", help="with --report: copy into DIR (docs/results) and fill the doc")
    ap.add_argument("--plan", action="store_true", help="print seed 0's rows and their counted GFLOPs; no sampling")
    ap.add_argument("--measure-row", metavar="ID", help="re-measure one row (its `id`) and print it as JSON")
    ap.add_argument("--models", default=PUBLISHED_MODELS, help="with --measure-row: the models to load; with "
                    "--save-progress: where finished models are published")
    ap.add_argument("--with-fid", action="store_true", help="with --measure-row: FID too")
    ap.add_argument("--progress", default=str(ROOT / PROGRESS), metavar="DIR",
                    help="rows and unfinished trainings carried between sessions: read before any stage "
                    "('' to ignore); --save-progress writes it")
    ap.add_argument("--save-progress", action="store_true", help="keep OUT's rows and unfinished trainings in "
                    "--progress, and publish finished models to --models (before a session ends)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings side by side")
    ap.add_argument("--shard", default="0/1", metavar="K/N")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu", help="where --measure, --fid and --measure-row sample and extract "
                    "features (cuda: the whole grid in minutes; --train uses CUDA by itself when present)")
    ap.add_argument("--compile", action="store_true", help="elit.compile_blocks (CPU: ~20%% faster sampling; "
                    "outputs differ from eager by ~1e-6)")
    ap.add_argument("--num", type=int, default=2000, help="samples per row (seeds 0..num-1)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--ref-num", type=int, default=None, help="reference images (default: the 10,000 test images)")
    ap.add_argument("--smoke", action="store_true", help="tiny models and samples, every stage: checks the pipeline")
    args = ap.parse_args()
    args.shard, args.shards = (int(v) for v in args.shard.split("/"))
    args.seeds, args.nfes = SEEDS, NFES
    overrides = []
    if args.smoke:
        if not args.out:
            raise SystemExit("--smoke needs --out")
        if args.progress == str(ROOT / PROGRESS):    # the real study's rows are not the smoke's
            args.progress = ""
        globals().update(SMOKE)
        overrides = ["model.hidden_size=32", "model.num_heads=2", "train.warmup_steps=1", "train.global_batch_size=8",
                     "log.sample_steps=2"]
        args.nfes, args.num, args.batch_size, args.ref_num = (2,), 16, 16, 64
        args.train = args.measure = args.fid = args.report = True
    if args.save_progress and not args.progress:
        raise SystemExit("--save-progress needs --progress DIR (where the next session finds the rows and checkpoints)")
    if args.measure_row:
        return measure_row(args)
    if args.plan:
        return print_plan(args)
    if not args.out:
        raise SystemExit("give --out (the study folder)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = pathlib.Path(args.progress) if args.progress else None
    if progress:    # before any stage, --save-progress too: saving must not drop rows kept earlier
        restore_progress(out, progress)
    if (args.train or args.measure or args.fid) and not args.smoke:
        reuse_published(out, ROOT / PUBLISHED_MODELS, args.seeds)   # a published model is trained: measure it
    if args.train:
        train(out, args.jobs, args.seeds, overrides)
    if args.measure:
        measure_stage(out, args)
    if args.fid:
        fid_stage(out, args)
    if args.report or args.publish:
        report(out, args.publish)
    if args.save_progress:
        save_progress(out, progress, pathlib.Path(args.models))
    return 0


def print_plan(args) -> int:
    """Seed 0's rows with their counted GFLOPs (untrained models: the cost does not depend on weights)."""
    from elit.model import ELITModel
    from elit.train.config import load_config
    total = 0.0
    for label, (config, extra) in MODELS.items():
        model = ELITModel(load_config(config, list(extra)).model).eval()
        for s in grid(label, args.nfes):
            gflops, passes = counted_cost(model, s)
            total += gflops * args.num
            print(f"{row_id(label, 0, s):60s} {gflops:8.3f} GFLOPs/img  {passes:5.0f} passes")
    print(f"{sum(len(grid(m, args.nfes)) for m in MODELS)} rows for seed 0; sampling {total / 1e3:.0f} TFLOPs "
          f"at {args.num} images per row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
