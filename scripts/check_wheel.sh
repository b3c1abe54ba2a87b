#!/usr/bin/env bash
# Packaging check (CI runs it): build the sdist and, from it, the wheel; install the wheel into a fresh
# virtualenv that sees nothing of this checkout; run `elit --help`, `elit --version` and a tiny
# forward at two budgets there. Catches files missing from the package (configs, page assets), a
# dependency left out of pyproject.toml, and an import that only works from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip install -q --disable-pip-version-check build
python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
ls "$work/dist"
python -m venv "$work/venv"
pip="$work/venv/bin/python -m pip install -q --disable-pip-version-check"
{ $pip "torch==2.13.0" && $pip "$work"/dist/*.whl; } >"$work/install.log" 2>&1 \
  || { tail -30 "$work/install.log"; exit 1; }    # torch's CPU build first, as scripts/setup.sh does
cd "$work"                             # nothing of the checkout on the path
"$work/venv/bin/elit" --help >/dev/null
"$work/venv/bin/elit" --version
"$work/venv/bin/python" - <<'PY'
import torch
import elit
model = elit.create_model("ELIT-DiT-S/2", num_classes=10, in_channels=1, input_size=32, depth=6, hidden_size=64, num_heads=4).eval()
torch.manual_seed(0)
x, t, y = torch.randn(2, 1, 32, 32), torch.rand(2), torch.tensor([1, 2])
with torch.no_grad():
    for p in model.parameters():       # untrained, the zero-initialised gates make every budget equal
        p.normal_(0, 0.05)
    full, low = model(x, t, y), model(x, t, y, budget=1)
assert full.shape == low.shape == x.shape and torch.isfinite(full).all() and not torch.equal(full, low)
assert elit.__file__.startswith(str(__import__("sys").prefix)), elit.__file__   # the installed copy
print(f"wheel OK: elit {elit.__version__} from {elit.__file__}; forward at budgets full and 1")
PY
