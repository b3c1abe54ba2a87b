#!/usr/bin/env bash
# The main job: on a fresh machine, set up, train one multi-budget ELIT-DiT on Fashion-MNIST
# (default preset fmnist-elit-dit), then sample the exported model at budgets 1, 2, 4, 8, 16 latents
# per group into one labelled PNG: one model, many budgets.
#
#   bash scripts/main_job.sh                      # output in runs/main-job
#   OUT=/tmp/run bash scripts/main_job.sh train.max_steps=2000   # extra args are config overrides
#
# Rerunning resumes from the newest checkpoint in $OUT (or, when training is done, only re-samples).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/main-job}

bash scripts/setup.sh
# Threads: by default (system.threads=0) elit takes the cores free now (elit._threads); on a machine
# shared with busy processes that is often one, several times faster than one per core.
# THREADS=N forces N (and makes the run's results bit-identical run to run).
elit train --config fmnist-elit-dit --out "$OUT" system.threads="${THREADS:-0}" "$@"

python - "$OUT" <<'PY'
import os, sys, pathlib
import elit
from elit._threads import set_threads
from elit.hub import read_class_names
from elit.train.samples import write_budget_grid

out = pathlib.Path(sys.argv[1])
set_threads(int(os.environ.get("THREADS") or 0), announce=print)
model = elit.load_pretrained(out / "model")       # the EMA weights that `elit train` exported
grid = write_budget_grid(model, out / "budget_grid.png", budgets=[1, 2, 4, 8, 16], steps=20, per_row=10,
                         class_names=read_class_names(out / "model"), progress=True)
print(f"budget grid (rows: budget = latents kept per group, with analytic GFLOPs per image per forward; "
      f"columns: the 10 classes, seeds 0-9, 20 Euler steps): {grid.resolve()}")
PY
