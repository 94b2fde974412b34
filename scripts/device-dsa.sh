#!/usr/bin/env bash
# The DSA kernels' check and bench on a GPU machine, in ONE call of the device tool:
# build with CUDA (sm_90a), run the GPU tests (and compute-sanitizer memcheck on them), measure
# the ceilings (cuBLASLt bf16/fp8 GEMM, device-to-device copy), time the indexer scores and
# top-k at 10K/60K/120K/200K tokens, and the plain PyTorch versions, checking ours against torch.
# A summary table and the logs go to $OUT (./device-out elsewhere; at most 8 files come back).
#
#   scripts/device-dsa.sh [quick|full] [STAGE...]
#     quick: the bench at 10K and 60K only; full: all four lengths (DSA_LENGTHS=10000,200000
#     picks others). STAGEs default to "build test memcheck index" plus the stages of
#     scripts/device-dsa.d/ ("attn": the sparse attention kernels); any subset may be named, in
#     order. Without "build", IC_DEVICE_BUILD names a folder with ic_tests and dsa_index_bench
#     built elsewhere (same CUDA 13.0 and Debian packages), and "resources" reads its objects.
#     DSA_TIMEOUT (s) bounds the tests and the bench (a hung kernel must not eat the device time).
#
# Stage hook (for more kernels, e.g. the sparse attention): a stage is a shell function
# stage_NAME, run with $build (the build folder), $OUT, $mode (quick|full) and note() (prints and
# appends to the summary). Put it in scripts/device-dsa.d/NAME.sh (sourced here, if present),
# build its targets by adding them to DSA_TARGETS there (DSA_TARGETS+=" my_bench"), and name
# it on the command line or add it to DSA_STAGES. A stage that fails sets status=1 and the
# script goes on with the next one.
#
# From the session checkout (the device runs a copy of it, not of a worktree):
#   rsync -a --delete --exclude .git --exclude 'build*' --exclude models --exclude data WORKTREE/ .devtree-index/
#   run: cd .devtree-index && scripts/device-dsa.sh full     carry [.devtree-index]
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
mode=${1:-quick}
shift || true
build=${IC_DEVICE_BUILD:-/tmp/icbuild-dsa}  # outside the tree: kept while the machine stays warm
OUT=${OUT:-$src/device-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt
[ -n "${DSA_APPEND:-}" ] || : >"$summary"  # DSA_APPEND=1: add to an earlier call's summary
note() { echo "$*" | tee -a "$summary"; }
export PATH=/usr/local/cuda/bin:$PATH
status=0
DSA_TARGETS="ic_tests dsa_index_bench"
DSA_STAGES="build test memcheck index"
for f in "$src"/scripts/device-dsa.d/*.sh; do [ -f "$f" ] && source "$f"; done
[ $# -gt 0 ] && DSA_STAGES="$*"

note "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -n 1)," \
  "$(nproc) cores, $(nvcc --version | tail -n 1), date $(date -u +%F)"

stage_build() {
  local gen=(); [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null && gen=(-G Ninja)
  if ! cmake -S "$src" -B "$build" "${gen[@]}" -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DIC_BUILD_BENCH=OFF \
      -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1; then
    note "FAIL: configure"; tail -n 30 "$OUT/build.log"; return 1
  fi
  local t0=$(date +%s)
  if ! cmake --build "$build" -j "$(nproc)" --target $DSA_TARGETS >>"$OUT/build.log" 2>&1; then
    note "FAIL: build"; grep -E -m 20 -A 3 "error" "$OUT/build.log"; return 1
  fi
  note "build: $(( $(date +%s) - t0 )) s"
  stage_resources
}

# Registers, spills and shared memory of the DSA kernels (the compiler's report, no device time),
# and the tensor-core instructions of the wgmma kernel's SASS (QGMMA = fp8 wgmma, HMMA = mma.sync).
stage_resources() {
  local d="$build"/CMakeFiles/indexcache_lib.dir/src/ops
  for o in "$d"/{indexer_cuda_wgmma,indexer_cuda_fp8,indexer_cuda_bf16,indexer_cuda_paged,topk_cuda}.cu.o; do
    cuobjdump -res-usage "$o" 2>/dev/null | grep -E 'Function|REG' | paste - - |
      sed -E 's/.*Function ([^:]*):.*(REG:[0-9]+ STACK:[0-9]+ SHARED:[0-9]+ LOCAL:[0-9]+).*/\2 \1/' | cut -c1-160
  done >"$OUT/resources.txt"
  cuobjdump -sass "$d/indexer_cuda_wgmma.cu.o" 2>/dev/null |
    grep -oE 'QGMMA[.A-Z0-9x]*|HGMMA[.A-Z0-9x]*|HMMA[.A-Z0-9]*|WARPGROUP[.A-Z]*|UTMALDG[.A-Z0-9]*|SYNCS[.A-Z]*' |
    sort | uniq -c >>"$OUT/resources.txt"
  head -n 40 "$OUT/resources.txt"
}

stage_test() {
  local t=$(date +%s)
  timeout "${DSA_TIMEOUT:-600}" "$build/ic_tests" \
    --gtest_filter='TopkCuda*:IndexerCuda*:IndexerFronts*:IndexerCpuBf16*:TopkCpu*:IndexerCpu*' >"$OUT/tests.log" 2>&1
  local rc=$?
  note "tests: rc $rc, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$OUT/tests.log" | tr '\n' ' ') ($(( $(date +%s) - t )) s)"
  grep -E -B2 -A6 'Failure$' "$OUT/tests.log" | head -n 60 | tee -a "$summary"
  grep -E '^\[       OK \]|FAILED' "$OUT/tests.log" | grep -E 'Cuda|FAILED' | tee -a "$summary"
  return $rc
}

stage_memcheck() {
  command -v compute-sanitizer >/dev/null || { note "memcheck: no compute-sanitizer"; return 0; }
  timeout "${DSA_MEMCHECK_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 9 "$build/ic_tests" \
    --gtest_filter="${DSA_MEMCHECK_FILTER:-TopkCuda.RaggedLengthsIncludingEmptyRows:TopkCuda.ManyRowsMatchCpuBitwise:TopkCuda.SplitRowsMatchCpuBitwise:IndexerCuda.Ragged*:IndexerCuda.Paged*:IndexerCuda.FusedCausal*}" \
    >"$OUT/memcheck.log" 2>&1
  local rc=$?
  note "memcheck: rc $rc ($(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -n 1))"
  [ $rc -eq 0 ] || [ $rc -eq 124 ]
}

stage_index() {
  mkdir -p /tmp/dsa_check
  local lens=(); [ -n "${DSA_LENGTHS:-}" ] && lens=(--lengths "$DSA_LENGTHS")
  timeout "${DSA_TIMEOUT:-600}" "$build/dsa_index_bench" --dump /tmp/dsa_check $([ "$mode" = quick ] && echo --quick) "${lens[@]}" --out "$OUT/index_bench.txt" \
    >"$OUT/index_bench.log" 2>&1
  local rc=$?
  note "dsa_index_bench: rc $rc"; cat "$OUT/index_bench.log" >>"$summary"; tail -n 60 "$OUT/index_bench.log"
  local Ls=10000,60000; [ "$mode" = full ] && Ls=10000,60000,120000,200000
  Ls=${DSA_TORCH_LENGTHS:-${DSA_LENGTHS:-$Ls}}
  PYTHONUNBUFFERED=1 python3 "$src/bench/gpu/torch_dsa_index.py" /tmp/dsa_check "$OUT/index_bench.txt" "$Ls" \
    >"$OUT/torch.log" 2>&1
  local rc2=$?
  note "torch_dsa_index.py: rc $rc2"; cat "$OUT/torch.log" | tee -a "$summary" | tail -n 40
  [ $rc -eq 0 ] && [ $rc2 -eq 0 ]
}

for s in $DSA_STAGES; do
  if ! declare -F "stage_$s" >/dev/null; then note "FAIL: no stage '$s'"; status=1; continue; fi
  "stage_$s" || { status=1; note "stage $s: FAILED"; [ "$s" = build ] && break; }
done
note "status: $status"
# At most 8 files come back: the summary and tables stay, the logs travel as one archive.
(cd "$OUT" && ls ./*.log >/dev/null 2>&1 && tar czf logs.tar.gz ./*.log && rm -f ./*.log)
exit $status
