#!/usr/bin/env bash
# Sparse attention stage on a GPU machine, SELF-CONTAINED: it builds what it needs, checks and
# times, and leaves its logs in $OUT; another stage script may call it as one step (it needs
# nothing set up before it and changes nothing outside its build folder and /tmp/sa_dump).
#
#   scripts/device-sparse-attention.sh [quick]
#
# 1. build ic_tests and bench/gpu/sparse_attention_bench with CUDA (in $IC_DEVICE_BUILD,
#    default /tmp/icbuild; a prebuilt ./.prebuilt/{ic_tests,sparse_attention_bench} is used
#    instead when present and it runs on this machine);
# 2. the GPU tests of the sparse kernels (tests/test_sparse_attention_cuda.cpp: both MLA kernels,
#    mma.sync and wgmma, bf16 and fp8 caches) and the CPU tests of the MLA reference, then
#    compute-sanitizer memcheck over the edge-case GPU tests (if it works here; $SA_MEMCHECK_S
#    seconds at most, default 45);
# 3. the workbench: ceilings (cuBLAS bf16 GEMM, device-to-device copy), sparse MLA prefill at
#    64 and 128 heads over 10K..200K contexts (wgmma; mma.sync at 10K; fp8 at 200K),
#    decode at batch 1 and 64 (both kernels, bf16 and fp8), GQA prefill and decode, each
#    checked against the CPU reference on sampled tokens;
# 4. the plain PyTorch versions: an independent check of our output, then their times.
# 5. one MLA prefill launch (the wgmma kernel) under ncu, for where its time goes (SA_NCU=0: skipped).
# "quick" skips the PyTorch timings.
# Logs: $OUT/sa_summary.txt (the table), sa_build.log, sa_tests.log, sa_memcheck.log, sa_bench.log,
# sa_torch.log, sa_ncu.log ($OUT defaults to ./device-out off the device tool).
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
mode=${1:-full}
build=${IC_DEVICE_BUILD:-/tmp/icbuild}
OUT=${OUT:-$src/device-out}
mkdir -p "$OUT"
summary=$OUT/sa_summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
export PATH=/usr/local/cuda/bin:$PATH
status=0

note "sparse attention stage, $(date -u +%FT%TZ): $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | head -n 1); $(nvcc --version | tail -n 1)"

tests=$build/ic_tests bench=$build/sparse_attention_bench
if [ -x .prebuilt/ic_tests ] && [ -x .prebuilt/sparse_attention_bench ] &&
   .prebuilt/ic_tests --gtest_filter='SparseMlaCuda*' --gtest_list_tests >/dev/null 2>&1; then
  tests=.prebuilt/ic_tests bench=.prebuilt/sparse_attention_bench
  note "build: using the prebuilt binaries in .prebuilt"
else
  gen=(); [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null && gen=(-G Ninja)
  t0=$(date +%s)
  if ! cmake -S "$src" -B "$build" "${gen[@]}" -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DIC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release \
      >"$OUT/sa_build.log" 2>&1 ||
     ! cmake --build "$build" -j "$(nproc)" --target ic_tests sparse_attention_bench >>"$OUT/sa_build.log" 2>&1; then
    note "FAIL: build"; grep -E -m 20 -A 3 "error" "$OUT/sa_build.log"; exit 1
  fi
  note "build: $(( $(date +%s) - t0 )) s"
fi

filter='SparseAttentionCuda*:SparseMlaCuda*:SparseMlaCpu*:SparseMlaFp8*:SparseAttentionCpu*'
t0=$(date +%s)
"$tests" --gtest_filter="$filter" >"$OUT/sa_tests.log" 2>&1 || status=1
note "tests ($filter): $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$OUT/sa_tests.log" | tr '\n' ' ') ($(( $(date +%s) - t0 )) s)"
grep -E -B2 -A6 'Failure$' "$OUT/sa_tests.log" | head -n 60 | tee -a "$summary"
# Two runs of the same binary on fresh seeds: a race shows as a failure in either.
"$tests" --gtest_filter='SparseAttentionCuda*:SparseMlaCuda*' >"$OUT/sa_tests2.log" 2>&1 || status=1
note "tests, second run: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/sa_tests2.log" | tr '\n' ' ')"

if command -v compute-sanitizer >/dev/null; then
  t0=$(date +%s)
  timeout "${SA_MEMCHECK_S:-45}" compute-sanitizer --tool memcheck --error-exitcode 9 "$tests" \
    --gtest_filter='SparseMlaCuda.NoValidIndex*:SparseAttentionCuda*' >"$OUT/sa_memcheck.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 124 ] || status=1
  note "memcheck: rc $rc$([ $rc -eq 124 ] && echo ' (timed out: partial)') ($(grep -E 'ERROR SUMMARY' "$OUT/sa_memcheck.log" | tail -n 1)) ($(( $(date +%s) - t0 )) s)"
fi

mkdir -p /tmp/sa_dump
"$bench" /tmp/sa_dump >"$OUT/sa_bench.log" 2>&1 || status=1
tee -a "$summary" <"$OUT/sa_bench.log"

# Where the MLA prefill kernel's time goes: one launch under Nsight Compute (clocks left alone).
if [ "${SA_NCU:-1}" = 1 ] && command -v ncu >/dev/null; then  # SA_NCU=0 skips it
  timeout 60 ncu --clock-control none -k regex:sparse_mla_wgmma_kernel -c 1 --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy "$bench" profile \
    >"$OUT/sa_ncu.log" 2>&1
  note "ncu (mla prefill, wgmma, T=4096 H=64 ctx=61440, one launch): rc $?"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Cache Throughput|Executed Ipc Active|Issue Slots Busy|SM Busy|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Stall|stall|Tensor|Pipe" \
    "$OUT/sa_ncu.log" | head -n 30 | tee -a "$summary"
fi

if command -v python3 >/dev/null; then
  python3 bench/gpu/torch_sparse_attention.py check /tmp/sa_dump >"$OUT/sa_torch.log" 2>&1 || status=1
  if [ "$mode" != quick ]; then
    PYTHONUNBUFFERED=1 timeout 150 python3 bench/gpu/torch_sparse_attention.py time >>"$OUT/sa_torch.log" 2>&1
  fi
  tee -a "$summary" <"$OUT/sa_torch.log"
fi
note "sparse attention stage: $([ $status -eq 0 ] && echo ok || echo FAIL)"
exit $status
