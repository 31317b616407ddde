#!/usr/bin/env bash
# A lent GPU machine's check in one run of at most 8 minutes: install vidiff when it does not import, then
# scripts/gpu_check.py (each real-size stage's training step eager and compiled, a DeepSpeed ZeRO-2 step, the
# host's reference speed). Exit status: 0 when every section passed, 1 when one failed, 2 without CUDA.
#
#     bash scripts/gpu_check.sh [--no-compile] [--vae] [--configs configs/gpu/base_dit.yaml]
#
# GPU_CHECK_SECONDS (default 480) bounds the whole run, the install included.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${GPU_CHECK_SECONDS:-480}
if ! python -c "import vidiff.training.train_stage" >/dev/null 2>&1; then
  echo "gpu_check: vidiff does not import here; pip install -e \".[dev]\" -c constraints/ci.txt"
  pip install -q -e ".[dev]" -c constraints/ci.txt
fi
left=$(( budget - SECONDS - 15 ))  # 15 s for the summary and the process to exit
if [ "$left" -lt 60 ]; then
  echo "gpu_check: the install left ${left} s of the ${budget} s budget; not enough to run the checks" >&2
  exit 1
fi
exec python scripts/gpu_check.py --time-limit "$left" "$@"
