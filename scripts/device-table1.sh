#!/usr/bin/env bash
# The Table 1 run on the device (docs/TABLE1.md): CUDA build, the GPU tests of the DSA family,
# the GEMMs and the random-weight models, a truncated quick check, then `indexcache table1` on
# the paper's 30B shape (random weights) and HF transformers' implementation beside it on a
# truncated model. Logs and results go to $OUT (the device tool's output folder).
#   scripts/device-table1.sh [full|quick]     (quick: tests and the truncated runs only)
#   IC_T1_LENGTHS, IC_T1_CONFIGS, IC_T1_STEPS, IC_T1_FLAGS (default --indexer-fp8), IC_T1_BUDGET
#   (seconds for the full run) and IC_HF_BUDGET (the HF peer's) override.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
OUT=${OUT:-$(pwd)/device-out}
# The tool brings back at most 8 files: the table, its JSON and plots at the top, every log in one archive.
top=$OUT
OUT=$top/logs
mkdir -p "$OUT"
trap 'for f in table1.md table1.json prefill.svg decode.svg; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$top/"; done; tar czf "$top/logs.tar.gz" -C "$top" logs && rm -rf "$OUT"' EXIT
build=/tmp/ic-t1-build
t0=$(date +%s)
echo "== build ($(nproc) cores)"
cmake -S . -B "$build" -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DIC_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" >>"$OUT/build.log" 2>&1 || {
  grep -E "error|warning" "$OUT/build.log" | head -40
  exit 1
}
grep -c "warning" "$OUT/build.log" | sed 's/^/build warnings: /'
echo "build: $(( $(date +%s) - t0 )) s"
echo "== GPU tests"
"$build/ic_tests" --gtest_filter='GemmBf16*:DsaFamily*:RandomWeights*:Table1*:MoE*:Moe*' >"$OUT/gpu-tests.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |FAILED|SKIPPED \]" "$OUT/gpu-tests.log" | head -30
bin=$build/indexcache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
echo "== quick: 4 layers"
"$bin" table1 --random-weights glm47-flash-dsa --device cuda --layers 4 --lengths 8192,32768 \
  --configs dsa,1/4 --decode-steps 8 --json "$OUT/t1-quick.json" 2>"$OUT/t1-quick.log" | tee "$OUT/t1-quick.md"
tail -3 "$OUT/t1-quick.log"
"$bin" table1 --random-weights glm47-flash-dsa --device cuda --layers 4 --lengths 8192,32768 --indexer-fp8 \
  --configs dsa,1/4 --decode-steps 8 --json "$OUT/t1-quick-fp8.json" 2>>"$OUT/t1-quick.log" | tail -4
[ "$mode" = quick ] && exit 0
echo "== full: 47 layers"
budget=${IC_T1_BUDGET:-360}
timeout "$budget" "$bin" table1 --random-weights glm47-flash-dsa --device cuda \
  --lengths "${IC_T1_LENGTHS:-10K,60K,120K,200K}" --configs "${IC_T1_CONFIGS:-dsa,1/2,1/4}" \
  --decode-steps "${IC_T1_STEPS:-16}" ${IC_T1_FLAGS---indexer-fp8} --json "$OUT/table1.json" --md "$OUT/table1.md" \
  --prefill-svg "$OUT/prefill.svg" --decode-svg "$OUT/decode.svg" 2>"$OUT/table1.log" >/dev/null
grep -vE "^  " "$OUT/table1.log" | tail -16
echo "== HF transformers, same 4 layers"
PYTHONUNBUFFERED=1 timeout ${IC_HF_BUDGET:-120} python3 scripts/hf_table1_peer.py --preset glm47-flash-dsa --layers 4 \
  --lengths 8192,32768 --configs dsa,1/4 --decode-steps 8 --out "$OUT/hf-peer.json" >/dev/null 2>"$OUT/hf-peer.log"
tail -6 "$OUT/hf-peer.log"
echo "total: $(( $(date +%s) - t0 )) s"
