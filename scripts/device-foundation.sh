#!/usr/bin/env bash
# The foundation's check on a GPU machine, in one call of the device tool: build with CUDA, run
# the whole test suite (the CUDA op and model tests included), perplexity of the reference text
# on the GPU against the CPU, a greedy generation, and prefill/decode throughput on both.
# Logs and a summary go to $OUT (the device tool's output folder; ./device-out elsewhere).
#
#   scripts/device-foundation.sh pack-deps DIR   (here) copy the Debian dev packages the build
#                                                 needs into DIR, a prefix to carry along
#   scripts/device-foundation.sh ops PARTS_DIR   (device) stage model parts from PARTS_DIR into
#                                                 /tmp/model; build; everything needing no model
#   scripts/device-foundation.sh all PARTS_DIR   (device) stage the remaining parts, reassemble
#                                                 and check the model; build; everything
#
# The model (98 MB) is larger than one call may carry, so it travels in parts over two calls
# made back to back while the machine stays warm; /tmp/model keeps the first part between them.
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
mode=${1:?usage: $0 pack-deps DIR | ops PARTS_DIR | all PARTS_DIR}
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model=/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
build=/tmp/icbuild  # outside the tree: the next call replaces the tree, not /tmp
deps=$src/.deps-prefix

if [ "$mode" = pack-deps ]; then
  dir=${2:?pack-deps needs a directory}
  mkdir -p "$dir"
  for p in libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev; do
    dpkg -L "$p" | grep -v '^/usr/share/doc' | while read -r f; do
      [ -f "$f" ] || continue
      mkdir -p "$dir/$(dirname "${f#/usr/}")"
      cp -L "$f" "$dir/${f#/usr/}"  # links dereferenced: carried links may not survive
    done
  done
  du -sh "$dir"
  exit 0
fi

parts=${2:?$mode needs the folder of model parts}
OUT=${OUT:-$src/device-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
export PATH=/usr/local/cuda/bin:$PATH

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -n 2; cmake --version | head -n 1; g++ --version | head -n 1; nproc
} >"$OUT/machine.txt" 2>&1
note "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1), $(nproc) cores"

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

# Configure with the machine's own libraries, else with the carried prefix.
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cfg=(-S "$src" -B "$build" "${gen[@]}" -DWITH_CUDA=ON -DIC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release)
if ! cmake "${cfg[@]}" >"$OUT/configure.log" 2>&1; then
  rm -rf "$build"
  cmake "${cfg[@]}" -DCMAKE_PREFIX_PATH="$deps" >>"$OUT/configure.log" 2>&1 || {
    note "FAIL: configure"; tail -n 30 "$OUT/configure.log"; exit 1; }
  note "configured with the carried dependency prefix"
fi
t0=$(date +%s)
if ! cmake --build "$build" -j "$(nproc)" >"$OUT/build.log" 2>&1; then
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
  grep -E '^\[  FAILED  \] [A-Za-z]' "$OUT/$name.log" | sort -u | tee -a "$summary"
  grep -E '^\[ (linear|attention|model|perplexity)' "$OUT/$name.log" >>"$summary"
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
for dev in cuda cpu; do
  "$ic" perplexity --device "$dev" -f "$text" --ctx-size 512 --json >"$OUT/ppl_$dev.json" 2>"$OUT/ppl_$dev.err" ||
    { status=1; note "FAIL: perplexity on $dev"; tail -n 5 "$OUT/ppl_$dev.err"; }
  note "perplexity $dev: $(cat "$OUT/ppl_$dev.json")"
done
python3 - "$OUT/ppl_cuda.json" "$OUT/ppl_cpu.json" <<'PY' | tee -a "$summary" || status=1
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
r = g["ppl"] / c["ppl"]
print(f"perplexity cuda/cpu = {r:.5f} (cuda {g['ppl']:.4f}, cpu {c['ppl']:.4f}, {g['tokens']} tokens, ctx 512): "
      + ("ok, within 0.5%" if abs(r - 1) < 0.005 else "FAIL, beyond 0.5%"))
sys.exit(0 if abs(r - 1) < 0.005 else 1)
PY
"$ic" generate --device cuda -p "The three primary colours are" -n 48 >"$OUT/generate_cuda.txt" 2>&1 || status=1
"$ic" generate --device cuda --chat -p "What is the capital of France?" -n 48 >>"$OUT/generate_cuda.txt" 2>&1 || status=1
note "generate (cuda, greedy):"; sed 's/^/  /' "$OUT/generate_cuda.txt" | tee -a "$summary"
for dev in cuda cpu; do
  "$ic" bench --device "$dev" --n-prompt 512 --n-gen 128 --reps 3 >"$OUT/bench_$dev.txt" 2>&1 || status=1
  note "bench $dev (prompt 512, gen 128, best of 3):"; tail -n 3 "$OUT/bench_$dev.txt" | tee -a "$summary"
done
exit $status
