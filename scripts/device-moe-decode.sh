#!/usr/bin/env bash
# Decode's MoE without a host sync (ops::MoeGemm::Gemv) on the device: CUDA build, the MoE and
# DSA-family GPU tests, moe_bench at decode sizes (grouped / per-expert / gemv beside the
# weight-read floor), then the 30B shape's decode at 10K and 200K, DSA and 1/4, 64 steps, as in
# scripts/device-table1-extra.sh's section 2 (the figures before the change). Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(pwd)/device-out}
mkdir -p "$OUT"
build=/tmp/ic-moe-build
t0=$(date +%s)
echo "== build ($(nproc) cores)"
cmake -S . -B "$build" -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DIC_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target indexcache ic_tests moe_bench >>"$OUT/build.log" 2>&1 || {
  grep -E "error|warning" "$OUT/build.log" | head -40
  exit 1
}
grep -c "warning" "$OUT/build.log" | sed 's/^/build warnings: /'
echo "build: $(( $(date +%s) - t0 )) s"
echo "== GPU tests"
"$build/ic_tests" --gtest_filter='Moe*:DsaFamily*:RandomWeights*:Table1*' >"$OUT/gpu-tests.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |FAILED|SKIPPED \]" "$OUT/gpu-tests.log" | head -30
echo "== moe_bench"
"$build/moe_bench" 1 2 4 8 64 2>&1 | tee "$OUT/moe-bench.log"
echo "== decode, 47 layers, 64 steps"
timeout 200 "$build/indexcache" table1 --random-weights glm47-flash-dsa --device cuda --lengths 10000,200000 \
  --configs dsa,1/4 --decode-steps 64 --indexer-fp8 --json "$OUT/decode.json" --md "$OUT/decode.md" \
  2>"$OUT/decode.log" >/dev/null
cat "$OUT/decode.md"
echo "total: $(( $(date +%s) - t0 )) s"
