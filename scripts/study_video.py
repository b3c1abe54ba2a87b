"""The video study (issue 16): video DiT vs single-budget ELIT video (as the paper trained video) vs
multi-budget ELIT video, on moving Fashion-MNIST, measured per frame (FD-FMNIST) and over time
(clip FD on the Fashion-MNIST classifier's features, class consistency, label accuracy).
Resumable: rerun the same command and it continues (training from checkpoints, rows from OUT/rows.json).

    python scripts/study_video.py --out runs/video-study                 # train, sweep, report
    python scripts/study_video.py --out runs/video-study --publish docs/results   # and video.md's table
    python scripts/study_video.py --out /tmp/v --smoke                   # minutes: tiny settings
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

MODELS = {"video-dit": "study-mfmnist-video-dit", "elit-video": "study-mfmnist-elit-video",
          "elit-video-mb": "study-mfmnist-elit-video-mb"}
NAMES = {"video-dit": "video DiT", "elit-video": "ELIT video (single budget)", "elit-video-mb": "ELIT video MB"}
METRICS = ("fd_fmnist", "fd_fmnist_clip", "class_consistency", "label_accuracy")
PLAN = [("video-dit", None), ("elit-video", 32), ("elit-video-mb", 32), ("elit-video-mb", 8), ("elit-video-mb", 2)]


def train(out: pathlib.Path, overrides: list[str]) -> dict:
    seconds = json.loads((out / "train_seconds.json").read_text()) if (out / "train_seconds.json").is_file() else {}
    for label, config in MODELS.items():
        run = out / "runs" / label
        if (run / "model" / "model.safetensors").is_file():
            print(f"[train] {label}: done")
            continue
        start = time.time()
        subprocess.run([sys.executable, "-m", "elit", "train", "--config", config, "--out", str(run),
                        "log.progress=false", *overrides], check=True)
        seconds[label] = round(time.time() - start, 1)
        (out / "train_seconds.json").write_text(json.dumps(seconds, indent=1) + "\n")
    return seconds


def publish(report: pathlib.Path, out: pathlib.Path, grids: list[pathlib.Path], dest: pathlib.Path) -> None:
    """Copy video.json, the resumable rows and the grids into DEST (docs/results) and, when DEST holds
    video.md, regenerate its results table from them (with DEST/video-reference.json's real-clip line),
    so the doc shows the published numbers. A doc without the table's markers stops this before
    anything is written."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from docs_tables import fill_doc, video_results    # the one renderer of that table (tests/test_docs.py)
    from elit._io import atomic_write
    files = {dest / "video.json": (report / "video.json").read_bytes(),
             dest / "video" / "rows.json": (out / "rows.json").read_bytes(),
             **{dest / "video" / g.name: g.read_bytes() for g in grids}}
    doc, reference = dest / "video.md", dest / "video-reference.json"
    if doc.is_file():
        table = video_results(json.loads(files[dest / "video.json"]),
                              json.loads(reference.read_text()) if reference.is_file() else None)
        files[doc] = fill_doc(doc.read_text(), {"video-results": table}).encode()
    for path, content in files.items():   # each file whole or not at all
        with atomic_write(path) as f:
            f.write(content)
    print(f"[publish] {dest}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num", type=int, default=2000, help="clips per row")
    ap.add_argument("--ref-num", type=int, default=2000, help="reference clips (moving-fmnist-test)")
    ap.add_argument("--steps", type=int, default=20, help="Euler steps")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--publish", metavar="DIR", help="copy video.json and the grids into DIR (docs/results) and "
                                                     "regenerate DIR/video.md's results table")
    ap.add_argument("--smoke", action="store_true", help="tiny models and few clips: checks the pipeline")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = []
    if args.smoke:
        overrides = ["train.max_steps=3", "model.hidden_size=32", "model.depth=3", "model.num_heads=2",
                     "log.ckpt_every=3", "log.sample_steps=2"]
        args.num, args.ref_num, args.steps, args.batch_size = 8, 16, 2, 8
    seconds = train(out, overrides)

    import torch
    from elit.cost import analytic_gflops
    from elit.data.fashion_mnist import CLASS_NAMES
    from elit.eval.report import format_table
    from elit.eval.sweep import run_sweep
    from elit.hub import load_pretrained
    from elit.sampling import sample
    from elit.video import clip_grid
    torch.set_num_threads(1)
    models = {label: load_pretrained(out / "runs" / label / "model") for label in MODELS}
    pairs = [(label, dict(latents_per_group=b, guidance="none", scale=0.0, weak_budget=None)) for label, b in PLAN]
    rows = run_sweep(models, pairs, num=args.num, steps=args.steps, sampler="euler", metrics=METRICS,
                     ref="moving-fmnist-test", batch_size=args.batch_size, json_path=out / "rows.json",
                     progress=False, ref_num=args.ref_num, fd_method="eigh")
    keys = ("model", "latents_per_group", "num_samples", "gflops_per_image", "steps", "images_per_s", *METRICS)
    results = [{k: r.get(k) for k in keys} for r in rows]
    report = out / "report"
    report.mkdir(exist_ok=True)
    (report / "video.json").write_text(json.dumps(results, indent=1) + "\n")
    grids = []
    for label, model in models.items():     # one GIF grid per model: a row per budget, seeds 0-9
        budgets = [b for (lab, b) in PLAN if lab == label]
        clips = [sample(model, range(10), budget=b, steps=args.steps).clamp(-1, 1) for b in budgets]
        names = [f"{'full' if b is None else f'J~={b}'} {analytic_gflops(model.config, b):.2f} GF" for b in budgets]
        columns = [CLASS_NAMES[seed % 10] for seed in range(10)]      # seed i is sampled with label i % 10
        grids += clip_grid(clips, names, report / f"samples-{label}.png", column_labels=columns)
    table = format_table(rows, METRICS)
    (report / "tables.md").write_text(f"```\n{table}\n```\n\ntraining seconds: {seconds}\n")
    print(table)
    if args.publish:
        publish(report, out, grids, pathlib.Path(args.publish))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
