#!/usr/bin/env bash
# The GPU performance check of elit (H100 / H200: under 10 minutes); see docs/performance-gpu.md.
#   bash benchmarks/gpu_check.sh                   # all sections; output also in runs/gpu-check/
#   bash benchmarks/gpu_check.sh --peak-tflops 989 # any benchmarks/gpu_check.py option passes through
#   bash benchmarks/gpu_check.sh --smoke           # the CPU test of the script (tiny model)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python -c "import elit" 2>/dev/null; then   # a bare checkout: use the source tree
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
out=runs/gpu-check
mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)
python benchmarks/gpu_check.py --json "$out/gpu_check-$stamp.json" "$@" 2>&1 | tee "$out/gpu_check-$stamp.log"
status=${PIPESTATUS[0]}
echo "gpu_check: exit status $status; log and figures in $out/gpu_check-$stamp.{log,json}"
exit "$status"
