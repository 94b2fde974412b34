#!/usr/bin/env bash
# The foundation's check on a GPU machine, in one call of the device tool: build with CUDA, run
# the whole test suite (the CUDA op and model tests included), perplexity of the reference text
# on the GPU against the CPU, a greedy generation, and prefill/decode throughput on both.
# Logs and a summary go to $OUT (the device tool's output folder; ./device-out elsewhere).
#
#   scripts/device-foundation.sh ops PARTS_DIR   (device) stage model parts from PARTS_DIR into
#                                                 /tmp/model; build; everything needing no model
#   scripts/device-foundation.sh all PARTS_DIR   (device) stage the remaining parts, reassemble
#                                                 and check the model; build; everything
#
# A float64 reference JSON (scripts/reference_forward.py) placed at .reference.json in the tree
# is used by the tests that compare with it.
#
# The model (98 MB) is larger than one call may carry, so it travels in parts over two calls
# made back to back while the machine stays warm; /tmp/model keeps the first part between them.
# From the session checkout (the device runs a copy of it, not of a worktree):
#   rsync -a --delete --exclude .git --exclude build --exclude 'build-*' --exclude models WORKTREE/ .devtree/
#   split -b 45M models/SmolLM2-135M-Instruct.Q4_1.gguf part_   (part_aa into .mpart1/, the rest into .mpart2/)
#   run: cd .devtree && scripts/device-foundation.sh ops ../.mpart1   carry [.devtree, .mpart1]
#   run: cd .devtree && scripts/device-foundation.sh all ../.mpart2   carry [.devtree, .mpart2], at once
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
mode=${1:?usage: $0 ops|all PARTS_DIR}
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model=/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
build=${IC_DEVICE_BUILD:-/tmp/icbuild}  # outside the tree: the next call replaces the tree, not /tmp

parts=${2:?$mode needs the folder of model parts}
OUT=${OUT:-$src/device-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
export PATH=/usr/local/cuda/bin:$PATH

# The tool brings back at most 8 files: one summary, one build log, one log per test run, one for the CLI.
note "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)," \
  "$(nproc) cores, $(nvcc --version | tail -n 1), $(cmake --version | head -n 1), $(g++ --version | head -n 1)"

mkdir -p /tmp/model/parts
cp "$parts"/part_* /tmp/model/parts/ && note "model parts now here: $(ls /tmp/model/parts | tr '\n' ' ')"
if [ "$mode" = all ]; then
  cat /tmp/model/parts/part_* >"$model"
  if [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$model_sha" ]; then
    note "FAIL: reassembled model has the wrong SHA-256 (parts: $(ls /tmp/model/parts | tr '\n' ' '))"
    exit 1
  fi
  note "model reassembled, SHA-256 ok"
  export IC_MODEL=$model
fi
# The float64 NumPy reference (scripts/reference_forward.py output), when carried along.
[ -f "$src/.reference.json" ] && export IC_REFERENCE_JSON=$src/.reference.json && note "reference JSON: $IC_REFERENCE_JSON"

# The device image has the Debian/Ubuntu dev packages the build needs (fmt, CLI11, nlohmann-json, GTest).
gen=(); [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null && gen=(-G Ninja)  # a new build only
if ! cmake -S "$src" -B "$build" "${gen[@]}" -DWITH_CUDA=ON -DIC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release \
    >"$OUT/build.log" 2>&1; then
  note "FAIL: configure"; tail -n 30 "$OUT/build.log"; exit 1
fi
t0=$(date +%s)
if ! cmake --build "$build" -j "$(nproc)" >>"$OUT/build.log" 2>&1; then
  note "FAIL: build"; grep -E -m 20 -A 3 "error" "$OUT/build.log"; exit 1
fi
note "build: $(( $(date +%s) - t0 )) s"

status=0
run_tests() {  # name, then gtest arguments
  local name=$1; shift
  local t=$(date +%s)
  "$build/ic_tests" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  note "$name: rc $rc, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$OUT/$name.log" | tr '\n' ' ') ($(( $(date +%s) - t )) s)"
  grep -E -B1 -A3 'Failure$' "$OUT/$name.log" | tee -a "$summary"
  grep -E '^\[ (linear|attention|model|perplexity)' "$OUT/$name.log" | tee -a "$summary"
}

if [ "$mode" = ops ]; then
  run_tests tests_ops --gtest_filter='*Cuda*'
  run_tests tests_all_no_model
  # Out-of-bounds and uninitialised reads in the kernels; the racecheck of the shared-memory tiles.
  if command -v compute-sanitizer >/dev/null; then
    timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$build/ic_tests" \
      --gtest_filter='RmsNormCuda*:RopeCuda*:SwigluCuda*:KvStoreCuda*:AddInplaceCuda*:AttentionCuda*' \
      >"$OUT/memcheck.log" 2>&1
    note "memcheck: rc $? ($(tail -n 1 "$OUT/memcheck.log"))"
    timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 "$build/ic_tests" \
      --gtest_filter='AttentionCuda*:RmsNormCuda*:RopeCuda*' >"$OUT/racecheck.log" 2>&1
    note "racecheck: rc $? ($(tail -n 1 "$OUT/racecheck.log"))"
  fi
  exit $status
fi

[ -f "$IC_MODEL" ] || { note "FAIL: no model at $IC_MODEL"; exit 1; }
run_tests tests_all
ic=$build/indexcache
text=$src/tests/data/reference_text.txt
rm -f /tmp/ppl_cuda.json /tmp/ppl_cpu.json
for dev in cuda cpu; do
  "$ic" perplexity --device "$dev" -f "$text" --ctx-size 512 --json >"/tmp/ppl_$dev.json" 2>>"$OUT/cli.log" ||
    { status=1; note "FAIL: perplexity on $dev"; }
  note "perplexity $dev: $(cat "/tmp/ppl_$dev.json")"
done
[ -s /tmp/ppl_cuda.json ] && [ -s /tmp/ppl_cpu.json ] &&
python3 - /tmp/ppl_cuda.json /tmp/ppl_cpu.json <<'PY' | tee -a "$summary" || status=1
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
r = g["ppl"] / c["ppl"]
print(f"perplexity cuda/cpu = {r:.5f} (cuda {g['ppl']:.4f}, cpu {c['ppl']:.4f}, {g['tokens']} tokens, ctx 512): "
      + ("ok, within 0.5%" if abs(r - 1) < 0.005 else "FAIL, beyond 0.5%"))
sys.exit(0 if abs(r - 1) < 0.005 else 1)
PY
{
  "$ic" generate --device cuda -p "The three primary colours are" -n 48 2>&1 || status=1
  "$ic" generate --device cuda --chat -p "What is the capital of France?" -n 48 2>&1 || status=1
} >/tmp/generate.txt
cat /tmp/generate.txt >>"$OUT/cli.log"
note "generate (cuda, greedy):"; sed 's/^/  /' /tmp/generate.txt | tee -a "$summary"
for dev in cuda cpu; do
  "$ic" bench --device "$dev" --n-prompt 512 --n-gen 128 --reps 3 >"/tmp/bench_$dev.txt" 2>&1 || status=1
  cat "/tmp/bench_$dev.txt" >>"$OUT/cli.log"
  note "bench $dev (prompt 512, gen 128, best of 3):"; tail -n 3 "/tmp/bench_$dev.txt" | tee -a "$summary"
done
exit $status
