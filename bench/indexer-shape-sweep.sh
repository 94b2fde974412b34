#!/usr/bin/env bash
# Indexer shape sweep (H_I heads x d_I dims): the same DSA warm-up recipe for each shape, then
# KL(p || q) and attention recall@k on the calib split (tuning data, never the held-out split),
# at the training window and at twice it. Prints a markdown table; logs in $SWEEP_DIR.
# Usage: bench/indexer-shape-sweep.sh [STEPS] [CTX] [TOPK] [THREADS]   (shapes: SWEEP_SHAPES="2x32 4x64 ...";
# SWEEP_DEVICE=cuda trains and evaluates on the GPU; IC_BIN, SWEEP_DATA, SWEEP_CALIB override paths;
# SWEEP_BUDGET (s) skips shapes once it is spent). On a 2-core CPU a 512-token step costs seconds;
# at 2K-8K it is GPU work (scripts/device-dsa-model.sh sweep).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
steps=${1:-120} ctx=${2:-512} k=${3:-64} t=${4:-2}
bin=${IC_BIN:-$root/build/indexcache}
dev=${SWEEP_DEVICE:-cpu}
data=${SWEEP_DATA:-$root/data/corpus/train} calib=${SWEEP_CALIB:-$root/data/corpus/calib}
t_start=$(date +%s)
dir=${SWEEP_DIR:-/tmp/indexer-shape-sweep}
mkdir -p "$dir"
echo "steps $steps x 2 windows of $ctx, top-k $k, device $dev, $t threads, $(date -u +%F), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| H_I x d_I | indexer params | key bytes/token (bf16) | train s | KL @$ctx | recall @$ctx | KL @$((2 * ctx)) | recall @$((2 * ctx)) |"
echo "|---|---|---|---|---|---|---|---|"
for shape in ${SWEEP_SHAPES:-2x32 2x64 4x32 4x64 8x64 4x128}; do
  H=${shape%x*} d=${shape#*x}
  f=$dir/h${H}d${d}.safetensors
  if [ -n "${SWEEP_BUDGET:-}" ] && [ $(( $(date +%s) - t_start )) -gt "$SWEEP_BUDGET" ]; then
    echo "| $H x $d | skipped: budget spent |"; continue
  fi
  t0=$(date +%s)
  "$bin" distill --device "$dev" --mode warmup -t "$t" --data "$data" --max-tokens 2000000 --heads "$H" --head-dim "$d" \
    --topk "$k" -c "$ctx" -b 2 -s 1 --steps "$steps" --save-every "$steps" -o "$f" \
    --heldout "$calib" --heldout-windows 8 >"$dir/h${H}d${d}.log" 2>&1 || { echo "| $H x $d | FAILED: $dir/h${H}d${d}.log |"; continue; }
  secs=$(( $(date +%s) - t0 ))
  at1=$(grep -E '^ mean \|' "$dir/h${H}d${d}.log" | tail -n 1 | awk -F'|' '{printf "%.4f | %.4f", $4, $5}')
  "$bin" distill --device "$dev" --eval-only -t "$t" --indexers "$f" --heldout "$calib" --heldout-windows 4 \
    -c $((2 * ctx)) --topk "$k" >"$dir/h${H}d${d}-eval2.log" 2>&1
  at2=$(grep -E '^ mean \|' "$dir/h${H}d${d}-eval2.log" | tail -n 1 | awk -F'|' '{printf "%.4f | %.4f", $4, $5}')
  # Per layer: wq [H d, D] + wk [d, D] + weights [H, D] + key norm (2 d); D = 576.
  params=$(( 30 * (H * d * 576 + d * 576 + H * 576 + 2 * d) ))
  echo "| $H x $d | $params | $(( 2 * d )) | $secs | $at1 | $at2 |"
  rm -f "$f.ckpt"
done
