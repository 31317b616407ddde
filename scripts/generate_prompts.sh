#!/usr/bin/env bash
# Text-to-video for a prompt list: scripts/generate_prompts.sh CHECKPOINT PROMPTS.txt OUT_DIR [vidiff generate flags]
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CHECKPOINT PROMPTS.txt OUT_DIR [--sampler dpmpp_2m --steps 20 --cfg 4 --seed 0]" >&2
  exit 2
fi
checkpoint=$1 prompts=$2 out=$3
shift 3
exec python -m vidiff generate --checkpoint "$checkpoint" --prompts-file "$prompts" --out "$out" "$@"
