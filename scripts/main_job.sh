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
# Threads: torch's default (all cores). On a machine shared with other busy processes, THREADS=1 is
# often several times faster: each parallel region otherwise waits for a descheduled thread.
elit train --config fmnist-elit-dit --out "$OUT" system.threads="${THREADS:-0}" "$@"

python - "$OUT" <<'PY'
import sys, pathlib
import elit
from elit.train.samples import write_budget_grid

out = pathlib.Path(sys.argv[1])
model = elit.load_pretrained(out / "model")       # the EMA weights that `elit train` exported
grid = write_budget_grid(model, out / "budget_grid.png", budgets=[1, 2, 4, 8, 16], steps=20, per_row=10)
print(f"budget grid (rows: latents per group J~ with analytic GFLOPs per image per forward, "
      f"columns: one per class, seeds 0-9, 20 Euler steps): {grid.resolve()}")
PY
