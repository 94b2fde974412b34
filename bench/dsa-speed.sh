#!/usr/bin/env bash
# CPU prefill and decode of SmolLM2 as dense, DSA (every layer F) and IndexCache 1/2 and 1/4, at
# 2K, 4K and 8K context. Speed does not depend on what the indexers learned, so freshly
# initialised ones (init-indexers) serve. Usage: bench/dsa-speed.sh [THREADS] [HEADS] [HEAD_DIM] [TOPK]
# (IC_REPS: best of that many runs per cell, default 1; IC_CONTEXTS: the contexts)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
t=${1:-2} heads=${2:-4} hd=${3:-64} k=${4:-256}
bin=$root/build/indexcache
idx=$(mktemp --suffix=.safetensors); trap 'rm -f "$idx"' EXIT
"$bin" init-indexers -o "$idx" --heads "$heads" --head-dim "$hd" --topk "$k" 2>/dev/null
echo "threads $t, indexer ${heads}x${hd}, top-k $k, $(date -u +%F), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ctx in ${IC_CONTEXTS:-2048 4096 8192}; do
  for cfg in dense all-F 1/2 1/4; do
    case $cfg in
      dense) extra=() ;;
      all-F) extra=(--indexers "$idx") ;;
      1/2) extra=(--indexers "$idx" --index-freq 2) ;;
      1/4) extra=(--indexers "$idx" --index-freq 4) ;;
    esac
    row=$("$bin" bench -p $((ctx - 32)) -n 32 -r "${IC_REPS:-1}" -t "$t" "${extra[@]}" 2>/dev/null | tail -n 1)
    echo "| $ctx | $cfg $row"
  done
done
