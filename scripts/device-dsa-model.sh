#!/usr/bin/env bash
# SmolLM2 as a DSA model on the GPU, in back-to-back calls of the device tool (the 98 MB model
# travels in parts): build with CUDA, the GPU tests (the op tests without the model when staging,
# the model's and the GPU trainer's once the model is there), the greedy IndexCache search on the GPU, and the evaluation suite (perplexity at
# 2K/4K/8K for every configuration, a top-k sweep, passkey retrieval, overlap heatmap). Attention
# recall runs on the CPU (its teacher is CPU code), so it is measured off the device.
# Logs go to $OUT (the device tool's output folder; ./device-out elsewhere).
#
#   scripts/device-dsa-model.sh stage DIR     (device) keep DIR's files (model parts part_*, data.tar)
#                                             under /tmp/icm; build when there is no build yet
#   scripts/device-dsa-model.sh run DIR       (device) stage the last files, reassemble and check the
#                                             model, build, test, search, evaluate (perplexity, recall)
#   scripts/device-dsa-model.sh speed DIR     (device, after two stage calls, or after run) prefill and
#                                             decode speed, dense / DSA / IndexCache 1/2, 1/4 at 2K-8K
#   scripts/device-dsa-model.sh sweep DIR CTX STEPS "4x64 8x64 ..."
#                                             (device, after two stage calls) bench/indexer-shape-sweep.sh
#                                             on the GPU: the warm-up per indexer shape, KL and recall
#                                             on the calib split at CTX and 2 CTX
#   scripts/device-dsa-model.sh passkey CFGS  (device) passkey retrieval of the named configurations
#                                             (comma-separated names of the run's configurations)
#   scripts/device-dsa-model.sh train DIR CTX STEPS [H D]
#                                             (device, after two stage calls) stage DIR's last part,
#                                             reassemble the model, then train on the GPU: the DSA
#                                             warm-up from scratch on CTX-token windows (H heads x D
#                                             dims, default 8 x 64; IC_TRAIN_BATCH windows per step,
#                                             default 2), then training-aware uniform 1/2
#                                             and 1/4 from it (STEPS/2 each), then held-out perplexity
#                                             of all of them at 2K/4K/8K; the f16 indexer files come
#                                             back in $OUT (trained.tar.part_*: cat | tar x) and
#                                             stay in /tmp/icm/trained for a later
#                                             `run` with IC_INDEXERS_DIR=/tmp/icm/trained
# From the session checkout (the device runs a copy of it):
#   The device tool carries 64 MiB with the tracked tree (38 MB with the committed 8 x 64
#   indexers), so each call takes at most ~28 MB more:
#   split -n 5 -d models/SmolLM2-135M-Instruct.Q4_1.gguf part_   (one 20 MB part per call, in .mpartN/)
#   tar cf .mpart1/data.tar data/corpus/calib data/corpus/heldout
#   for train: the fixed slice of the train split the committed indexers used, in a call of its own:
#   tar cf .mpart6/train.tar --transform 's|^data/train-subset|data/corpus/train|' "$(scripts/train-subset)"
#   run: scripts/device-dsa-model.sh stage .mpart1   carry [.mpart1]; then .mpart2 .. .mpart4 (and
#   .mpart6); then run .mpart5 (or train .mpart5 4096 400 8 64 instead of run; then run with
#   IC_INDEXERS_DIR=/tmp/icm/trained and an empty DIR: the parts are already there)
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
usage="usage: $0 stage|run|speed DIR | train DIR CTX STEPS [H D] | sweep DIR CTX STEPS SHAPES | passkey CONFIGS"
mode=${1:?$usage}
case $mode in stage | run | speed | train | sweep | passkey) ;; *) echo "$usage" >&2; exit 2 ;; esac
t_start=$(date +%s)  # the call's budgets count from here (the device tool stops a call at 600 s)
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
icm=/tmp/icm
model=$icm/SmolLM2-135M-Instruct.Q4_1.gguf
build=${IC_MODEL_BUILD:-$icm/build}  # IC_MODEL_BUILD=/tmp/icbuild-dsa shares scripts/device-dsa.sh's build
OUT=${OUT:-$src/device-out}
mkdir -p "$OUT" "$icm/parts"
summary=$OUT/summary-$mode.txt
: >"$summary"
# The tool brings back at most 8 files: the summary, the results, and one archive of the logs.
LOG=$icm/logs-$mode
rm -rf "$LOG" && mkdir -p "$LOG"
trap 'tar czf "$OUT/logs-$mode.tar.gz" -C "$icm" "logs-$mode"' EXIT
note() { echo "$*" | tee -a "$summary"; }
export PATH=/usr/local/cuda/bin:$PATH
topk=${IC_EVAL_TOPK:-256}

if [ "$mode" != passkey ]; then
  dir=${2:?$mode needs the folder of parts}
  for f in "$dir"/*; do
    case $(basename "$f") in
      part_*) cp "$f" "$icm/parts/" ;;
      *.tar) tar xf "$f" -C "$icm" ;;
    esac
  done
  note "staged: $(ls "$icm/parts" | tr '\n' ' ')$( [ -d "$icm/data" ] && echo '+ data')"
fi

build_all() {
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$src" -B "$build" -DWITH_CUDA=ON -DIC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release >"$LOG/build.log" 2>&1 ||
      { note "FAIL: configure"; tail -n 30 "$LOG/build.log"; exit 1; }
  fi
  local t0=$(date +%s)
  cmake --build "$build" -j "$(nproc)" >>"$LOG/build.log" 2>&1 ||
    { note "FAIL: build"; grep -E -m 20 -A 3 "error" "$LOG/build.log"; exit 1; }
  note "build: $(( $(date +%s) - t0 )) s"
}

if [ "$mode" = stage ]; then
  build_all
  [ -f "$icm/ops-tested" ] && exit 0  # the op tests ran in an earlier stage call on this machine
  touch "$icm/ops-tested"
  "$build/ic_tests" --gtest_filter='*Cuda*:-ModelCuda*' >"$LOG/tests-gpu-ops.log" 2>&1
  note "GPU op tests (no model): rc $?, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$LOG/tests-gpu-ops.log" | tr '\n' ' ')"
  grep -E -A3 'Failure$' "$LOG/tests-gpu-ops.log" | head -20 | tee -a "$summary"
  exit 0
fi

ic=$build/indexcache
# The indexers under test: the committed ones, or those a `train` call left on this machine.
idx=${IC_INDEXERS_DIR:-$src/models/indexers}
iname=${IC_INDEXER_NAME:-smollm2-h8d64}  # files $iname-{allF,half,quarter}.safetensors in $idx
status=0
assemble_model() {
  if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$model_sha" ]; then
    cat "$icm"/parts/part_* >"$model"
    [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$model_sha" ] || { note "FAIL: model SHA-256 (parts: $(ls "$icm/parts" | tr '\n' ' '))"; exit 1; }
  fi
  note "model reassembled, SHA-256 ok; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  export IC_MODEL=$model
}
if [ "$mode" = run ]; then
  assemble_model
  build_all
  t=$(date +%s)
  "$build/ic_tests" --gtest_filter='ModelCuda*:DistillCudaTrainer*' >"$LOG/tests-all.log" 2>&1 || status=1
  note "GPU tests with the model: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$LOG/tests-all.log" | tr '\n' ' ') ($(( $(date +%s) - t )) s)"
  grep -E -A3 'Failure$' "$LOG/tests-all.log" | head -30 | tee -a "$summary"
  grep -E '^\[ model cuda' "$LOG/tests-all.log" | tee -a "$summary"

  # The greedy search on the GPU, calibration split only (never the held-out one).
  t=$(date +%s)
  "$ic" search --device cuda --indexers "$idx/${iname}-allF.safetensors" --topk "$topk" -f "$icm/data/corpus/calib" \
    -c 2048 --windows "${IC_SEARCH_WINDOWS:-8}" --seed 7 --json "$OUT/search.json" --svg "$OUT/search.svg" >"$LOG/search.log" 2>"$LOG/search.err" || { status=1; note "FAIL: search"; tail -5 "$LOG/search.err"; }
  note "search (GPU, ${IC_SEARCH_WINDOWS:-8} x 2048 calibration tokens, k $topk): $(( $(date +%s) - t )) s"
  grep -E "1/2|1/4|1/8|cost|evaluations" "$LOG/search.log" | head -12 | tee -a "$summary"
  cp "$OUT/search.json" "$icm/search.json" 2>/dev/null

  held=$icm/data/corpus/heldout
  configs=(--config dense=dense --config dsa="$idx/${iname}-allF.safetensors"
    --config uniform-1/2="$idx/${iname}-allF.safetensors@freq=2" --config uniform-1/4="$idx/${iname}-allF.safetensors@freq=4"
    --config uniform-1/8="$idx/${iname}-allF.safetensors@freq=8"
    --config searched-1/2="$idx/${iname}-allF.safetensors@search=$icm/search.json:1/2"
    --config searched-1/4="$idx/${iname}-allF.safetensors@search=$icm/search.json:1/4"
    --config searched-1/8="$idx/${iname}-allF.safetensors@search=$icm/search.json:1/8"
    --config trained-1/2="$idx/${iname}-half.safetensors" --config trained-1/4="$idx/${iname}-quarter.safetensors")
  printf '%s\n' "${configs[@]}" >"$icm/configs.txt"
  t=$(date +%s)
  "$ic" eval --device cuda "${configs[@]}" --topk "$topk" -f "$held" --max-tokens "${IC_EVAL_TOKENS:-65536}" --sections ppl \
    --json "$OUT/eval-ppl.json" --markdown "$OUT/eval-ppl.md" >/dev/null 2>"$LOG/eval-ppl.err" ||
    { status=1; note "FAIL: eval ppl"; tail -5 "$LOG/eval-ppl.err"; }
  note "eval perplexity: $(( $(date +%s) - t )) s"
  # The top-k sweep of the all-F indexers: DSA against dense at each context.
  t=$(date +%s)
  for k in 64 128 512 1024; do
    "$ic" eval --device cuda --config dsa-k$k="$idx/${iname}-allF.safetensors" --topk "$k" -f "$held" --max-tokens 32768 \
      --sections ppl --json "$LOG/sweep-k$k.json" >/dev/null 2>>"$LOG/sweep.err" || { status=1; note "FAIL: sweep k $k"; }
  done
  python3 - "$LOG" <<'PY' >"$LOG/sweep.md"
import json, glob, sys
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/sweep-k*.json"), key=lambda p: int(p.split("-k")[-1][:-5])):
    c = json.load(open(f))["configs"][0]
    rows.append("| " + c["name"] + " | " + " | ".join(f"{p['ctx']}: {p['ppl']:.3f}" for p in c["perplexity"]) + " |")
print("\n".join(rows))
PY
  rm -f "$LOG"/sweep-k*.json
  note "top-k sweep: $(( $(date +%s) - t )) s"; cat "$LOG/sweep.md" | tee -a "$summary"
  "$ic" overlap --device cuda --indexers "$idx/${iname}-allF.safetensors" --topk "$topk" -f "$held/austen/persuasion.txt" --ctx 2048 \
    --pattern "search=$icm/search.json:1/4" --json "$OUT/overlap.json" --svg "$OUT/overlap.svg" >/dev/null 2>"$LOG/overlap.err" ||
    { note "overlap failed: $(tail -3 "$LOG/overlap.err")"; }
  exit $status
fi

if [ "$mode" = train ]; then
  ctx=${3:?train needs DIR CTX STEPS}; steps=${4:?train needs DIR CTX STEPS}; H=${5:-8}; D=${6:-64}
  [ -d "$icm/data/corpus/train" ] || { note "FAIL: no train split staged (train.tar)"; exit 1; }
  assemble_model
  build_all
  out=$icm/trained
  mkdir -p "$out"
  name=smollm2-h${H}d${D}
  budget=${IC_TRAIN_BUDGET:-560}
  left() { echo $(( budget - ($(date +%s) - t_start) )); }
  # The GPU trainer's own tests with the model first (a few seconds).
  "$build/ic_tests" --gtest_filter='DistillCudaTrainer*' >"$LOG/tests-trainer.log" 2>&1 || status=1
  note "GPU trainer tests with the model: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$LOG/tests-trainer.log" | tr '\n' ' ')"
  # The warm-up from scratch, then the training-aware patterns from it (scripts/train-indexers' recipe
  # at CTX-token windows). Shares of what is left after keeping 60 s for the evaluation: the
  # warm-up at most 55 %, the first pattern run half of what then remains, the second all of the
  # rest; each share is given to distill as
  # --time-limit: a run that does not fit stops after the last step that does, writes its file
  # from there (its metadata says so) and keeps its checkpoint in $out (--resume continues it).
  dev=${IC_DEVICE:-cuda}  # IC_DEVICE=cpu: a small dry run of this mode off the device
  common=(--device "$dev" --data "$icm/data/corpus/train" --heldout "$icm/data/corpus/calib" --heldout-windows 2
          --heads "$H" --head-dim "$D" --topk "$topk" -c "$ctx" -b "${IC_TRAIN_BATCH:-2}" -s 1 --save-every 50 --save-dtype f16)
  run_distill() {  # NAME STEPS SHARE_PERCENT args...
    local n=$1 st=$2 share=$3; shift 3
    local t=$(date +%s) cap=$(( ($(left) - 60) * share / 100 ))
    [ "$cap" -gt 20 ] || { note "distill $n: skipped, time budget spent"; return 1; }
    timeout $(( cap + 60 )) "$ic" distill "${common[@]}" --steps "$st" --time-limit "$cap" -o "$out/$n.safetensors" "$@" >"$LOG/train-$n.log" 2>&1 ||
      { status=1; note "FAIL: distill $n (stopped after $(( $(date +%s) - t )) s of $cap)"; tail -3 "$LOG/train-$n.log" | tee -a "$summary"; return 1; }
    note "distill $n (ctx $ctx, $st steps): $(( $(date +%s) - t )) s"
    grep -E "^step|trained|stopped by" "$LOG/train-$n.log" | tail -n 4 | tee -a "$summary"
    grep -E "^ *mean|recall" "$LOG/train-$n.log" | tail -n 2 | tee -a "$summary"
    grep -q "stopped by" "$LOG/train-$n.log" || rm -f "$out/$n.safetensors.ckpt"
  }
  half=$(( steps / 2 > 0 ? steps / 2 : 1 ))
  run_distill "$name-allF" "$steps" 55 --mode warmup &&
    { run_distill "$name-quarter" "$half" 50 --mode pattern --index-freq 4 --init "$out/$name-allF.safetensors"
      run_distill "$name-half" "$half" 100 --mode pattern --index-freq 2 --init "$out/$name-allF.safetensors"; }
  # The tool brings back at most 8 files of up to 16 MiB each; a 30-layer f16 file is
  # 2 x 30 x (H D + D + H) x 576 bytes (4 x 64: 11 MB, 8 x 64: 20 MB). So the trained files come
  # back as one tar in parts of 15 MiB: cat trained.tar.part_* | tar x.
  (cd "$out" && ls ./*.safetensors >/dev/null 2>&1 && tar cf - ./*.safetensors | split -b 15m -d - "$OUT/trained.tar.part_")
  held=$icm/data/corpus/heldout
  cfgs=(--config dense=dense)
  [ -f "$out/$name-allF.safetensors" ] && cfgs+=(--config dsa="$out/$name-allF.safetensors"
    --config uniform-1/4="$out/$name-allF.safetensors@freq=4")
  [ -f "$out/$name-quarter.safetensors" ] && cfgs+=(--config trained-1/4="$out/$name-quarter.safetensors")
  [ -f "$out/$name-half.safetensors" ] && cfgs+=(--config trained-1/2="$out/$name-half.safetensors")
  t=$(date +%s)
  timeout "$(( $(left) > 30 ? $(left) : 30 ))" "$ic" eval --device "$dev" "${cfgs[@]}" --topk "$topk" -f "$held" \
    --ctx "${IC_EVAL_CTX:-2048,4096,8192}" --max-tokens "${IC_EVAL_TOKENS:-65536}" --sections ppl --json "$OUT/eval-train.json" --markdown "$OUT/eval-train.md" \
    >/dev/null 2>"$LOG/eval-train.err" || { status=1; note "FAIL: eval of the trained indexers"; tail -3 "$LOG/eval-train.err"; }
  note "eval: $(( $(date +%s) - t )) s"; cat "$OUT/eval-train.md" >>"$summary" 2>/dev/null
  exit $status
fi

if [ "$mode" = speed ]; then
  # Prefill and decode on the GPU, dense vs DSA vs IndexCache 1/2 and 1/4 (ForwardStats shares;
  # speed does not depend on what the indexers learned). SmolLM2's context ends at 8,192.
  assemble_model
  build_all
  f=$idx/${iname}-allF.safetensors
  note "| context | model | threads | prefill tokens | prefill tok/s | indexer % | attention % | decode tokens | decode tok/s | peak RSS MiB |"
  note "|---|---|---|---|---|---|---|---|---|---|"
  for ctx in ${IC_SPEED_CONTEXTS:-2048 4096 8192}; do
    for cfg in dense all-F 1/2 1/4; do
      case $cfg in
        dense) extra=() ;; all-F) extra=(--indexers "$f" --topk "$topk") ;;
        1/2) extra=(--indexers "$f" --topk "$topk" --index-freq 2) ;; 1/4) extra=(--indexers "$f" --topk "$topk" --index-freq 4) ;;
      esac
      cap=$(( ${IC_SPEED_BUDGET:-540} - ($(date +%s) - t_start) ))
      [ "$cap" -gt 10 ] || { note "| $ctx | $cfg | skipped: time budget spent |"; continue; }
      if row=$(timeout "$cap" "$ic" bench --device "${IC_DEVICE:-cuda}" -p $((ctx - 32)) -n 32 -r 3 "${extra[@]}" 2>>"$LOG/speed.err"); then
        note "| $ctx | $cfg $(echo "$row" | tail -n 1)"
      else
        rc=$?; status=1; note "| $ctx | $cfg | FAILED (rc $rc; $LOG/speed.err) |"
      fi
    done
  done
  exit $status
fi

if [ "$mode" = sweep ]; then
  ctx=${3:?sweep needs DIR CTX STEPS SHAPES}; steps=${4:?sweep needs DIR CTX STEPS SHAPES}; shapes=${5:?sweep needs SHAPES}
  [ -d "$icm/data/corpus/train" ] || { note "FAIL: no train split staged (train.tar)"; exit 1; }
  assemble_model
  build_all
  SWEEP_DIR=$LOG/sweep SWEEP_SHAPES=$shapes SWEEP_DEVICE=${IC_DEVICE:-cuda} IC_BIN=$ic SWEEP_DATA=$icm/data/corpus/train \
    SWEEP_CALIB=$icm/data/corpus/calib SWEEP_BUDGET=$(( ${IC_SWEEP_BUDGET:-480} - ($(date +%s) - t_start) )) \
    timeout $(( 570 - ($(date +%s) - t_start) )) bash "$src/bench/indexer-shape-sweep.sh" "$steps" "$ctx" "$topk" "$(nproc)" 2>&1 | tee -a "$summary" || status=1
  rm -f "$LOG"/sweep/*.safetensors*
  exit $status
fi

# passkey: the named configurations of the run, full size (4 lengths x 5 depths x 200 trials),
# one configuration at a time in the order given (each its own JSON and table, so that the
# ones finished before IC_PASSKEY_BUDGET seconds come back if a later one cannot finish).
want=${2:?passkey needs configuration names}
n_want=$(echo "${want//,/ }" | wc -w)
[ "$n_want" -le 6 ] || { note "FAIL: at most 6 configurations per call (8 files come back), got $n_want"; exit 1; }
mapfile -t all <"$icm/configs.txt"
export IC_MODEL=$model
t0=$(date +%s)
for name in ${want//,/ }; do
  sel=()
  for ((i = 0; i < ${#all[@]}; i += 2)); do
    [ "${all[i+1]%%=*}" = "$name" ] && sel=("${all[i]}" "${all[i+1]}")
  done
  [ ${#sel[@]} -eq 2 ] || { note "FAIL: no configuration $name"; status=1; continue; }
  left=$(( ${IC_PASSKEY_BUDGET:-540} - ($(date +%s) - t0) ))
  [ $left -gt 30 ] || { note "passkey $name: skipped, time budget spent"; continue; }
  t=$(date +%s)
  f=${name//\//_}
  timeout "$left" "$ic" eval --device cuda "${sel[@]}" --topk "$topk" --sections passkey --json "$OUT/passkey-$f.json" \
    --markdown "$LOG/passkey-$f.md" >/dev/null 2>"$LOG/passkey-$f.err" || { status=1; note "FAIL: passkey $name"; tail -3 "$LOG/passkey-$f.err"; }
  note "passkey $name: $(( $(date +%s) - t )) s"
  cat "$LOG/passkey-$f.md" >>"$summary" 2>/dev/null
done
exit $status
