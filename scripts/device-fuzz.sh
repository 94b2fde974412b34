#!/usr/bin/env bash
# Long libFuzzer runs on a machine without clang (the GPU machine's CPU cores), in one call of the
# device tool, with the flags scripts/fuzz passes (-rss_limit_mb=2048 -malloc_limit_mb=2048
# -timeout=10, the target's dictionary; UBSan halts on its first report). Logs, findings and the
# grown corpora go to $OUT (./device-out elsewhere); the summary's last lines give per target:
# execs (summed over its processes), exec/s (execs / the run's wall time), cov and ft (the most
# any process reached), findings.
#
#   scripts/device-fuzz.sh BUNDLE SECONDS [--reserve N] TARGET...
#     BUNDLE     folder scripts/fuzz-bundle made: bin/fuzz_<name>.gz (the instrumented binaries,
#                debug info stripped), lib.tar.gz (libomp, libfmt, libstdc++ ...), corpus.tar.gz
#                (corpus/<name>/: the corpus to go on from; fuzz/corpus/<name>/ when absent)
#     SECONDS    the whole run ends by then (each process gets the time left as -max_total_time)
#     TARGET...  in priority order. One process per core, each a chunk of -runs=IC_FUZZ_CHUNK
#                (default 300,000) on the target's shared corpus folder (-reload picks up what the
#                others find). A free core takes the first target whose finished and running chunks
#                fall short of IC_FUZZ_EXECS (default 10,500,000); with --reserve N the last N
#                targets each keep one core of their own all the time, so the slow ones get some
#                execs while the fast ones are brought to the goal first. A target stops getting
#                chunks after 3 findings.
# A target neither reserved nor reached in the order gets no core at all (hf_folder, third of
# seven with --reserve 4, on 2026-12-03): reserve all but the first one or two.
# Example (docs/FUZZ.md): scripts/device-fuzz.sh .fuzzbundle 280 --reserve 6 dsa_config tokenizer_json ...
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bundle=$(cd "${1:?usage: $0 BUNDLE SECONDS [--reserve N] TARGET...}" && pwd)
secs=${2:?need SECONDS}
shift 2
reserve=0
[ "${1-}" = --reserve ] && { reserve=$2; shift 2; }
[ $# -gt 0 ] || { echo "name the targets" >&2; exit 2; }
goal=${IC_FUZZ_EXECS:-10500000} chunk=${IC_FUZZ_CHUNK:-300000}
OUT=${OUT:-$root/device-out}
mkdir -p "$OUT"
work=/tmp/icfuzz
rm -rf "$work" && mkdir -p "$work/bin" "$work/corpus" "$work/logs" "$work/findings"
tar -C "$work" -xzf "$bundle/lib.tar.gz" || exit 1
[ -f "$bundle/corpus.tar.gz" ] && { mkdir -p "$work/from" && tar -C "$work/from" -xzf "$bundle/corpus.tar.gz"; }
export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# No allocation/free stacks in ASan reports (detection is the same; a finding is replayed where
# it was built, with full stacks): recording one per malloc was ~10% of the time of the
# JSON-heavy targets.
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0}"
# fuzz_chat_template reads a fixed tokenizer.json from the source tree.
export IC_FUZZ_CHATML_TOKENIZER=$root/fuzz/corpus/tokenizer_json/smollm.json
summary=$OUT/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
cores=$(nproc)
note "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)"
note "$secs s; goal $goal execs per target in chunks of $chunk; ASAN_OPTIONS=$ASAN_OPTIONS; started $(date -u +%FT%TZ)"

targets=()
for t in "$@"; do
  t=${t#fuzz_}
  gunzip -c "$bundle/bin/fuzz_$t.gz" >"$work/bin/fuzz_$t" && chmod +x "$work/bin/fuzz_$t" ||
    { note "FAIL $t: no binary $bundle/bin/fuzz_$t.gz"; continue; }
  if ldd "$work/bin/fuzz_$t" | grep -q 'not found'; then
    note "FAIL $t: missing libraries: $(ldd "$work/bin/fuzz_$t" | grep 'not found' | tr -s ' \n' ' ')"; continue
  fi
  mkdir -p "$work/corpus/$t" "$work/findings/$t" "$work/logs/$t"
  from=$work/from/corpus/$t; [ -d "$from" ] || from=$root/fuzz/corpus/$t
  cp "$from"/* "$work/corpus/$t"/ && cp -n "$root/fuzz/corpus/$t"/* "$work/corpus/$t"/ 2>/dev/null
  note "$t: corpus $(ls "$work/corpus/$t" | wc -l) files"
  targets+=("$t")
done
[ ${#targets[@]} -gt 0 ] || exit 1
start=$SECONDS deadline=$((SECONDS + secs))

declare -A done_runs inflight chunks slot_target
for t in "${targets[@]}"; do done_runs[$t]=0 inflight[$t]=0 chunks[$t]=0; done
execs_of() { awk '/^stat::number_of_executed_units:/ { n += $2 } END { print n + 0 }' "$@" 2>/dev/null; }
findings_of() { ls "$work/findings/$1" | wc -l; }

launch() {  # launch SLOT TARGET
  local s=$1 t=$2 left=$((deadline - SECONDS)) k=${chunks[$2]}
  chunks[$t]=$((k + 1)) inflight[$t]=$((inflight[$t] + chunk))
  local dict=(); [ -f "$root/fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
  (cd "$work/logs/$t" && exec "$work/bin/fuzz_$t" "$work/corpus/$t" "${dict[@]}" -rss_limit_mb=2048 \
     -malloc_limit_mb=2048 -timeout=10 -artifact_prefix="$work/findings/$t/" -print_final_stats=1 \
     -runs="$chunk" -max_total_time="$left" -seed=$((1000 * s + k + 1))) >"$work/logs/$t/chunk-$k.log" 2>&1 &
  slot_target[$!]="$s $t $k"
}

# The target a free core takes: its own when reserved, else the first one short of the goal.
pick() {  # pick SLOT -> target name or nothing
  local s=$1 n=${#targets[@]} i t
  if [ "$s" -ge $((cores - reserve)) ]; then
    t=${targets[$((n - (cores - s)))]}
    [ "$(findings_of "$t")" -lt 3 ] && echo "$t"
    return
  fi
  for t in "${targets[@]}"; do
    [ "$(findings_of "$t")" -lt 3 ] || continue
    [ $((done_runs[$t] + inflight[$t])) -lt "$goal" ] && { echo "$t"; return; }
  done
}

for ((s = 0; s < cores; s++)); do
  t=$(pick "$s"); [ -n "$t" ] && launch "$s" "$t"
done
while [ ${#slot_target[@]} -gt 0 ]; do
  wait -n -p pid; rc=$?
  read -r s t k <<<"${slot_target[$pid]}"; unset "slot_target[$pid]"
  n=$(execs_of "$work/logs/$t/chunk-$k.log")
  done_runs[$t]=$((done_runs[$t] + n)) inflight[$t]=$((inflight[$t] - chunk))
  [ "$rc" -eq 0 ] || note "  $t chunk $k ended with exit $rc after $n execs (t+$((SECONDS - start)) s)"
  if [ $((deadline - SECONDS)) -ge 5 ]; then
    t=$(pick "$s"); [ -n "$t" ] && launch "$s" "$t"
  fi
done
wall=$((SECONDS - start))

failed=0
for t in "${targets[@]}"; do
  logs=("$work/logs/$t"/chunk-*.log)
  execs=$(execs_of "${logs[@]}")
  most() { cat "${logs[@]}" | grep -oE "$1 *[0-9]+" | grep -oE '[0-9]+$' | sort -n | tail -n 1; }
  found=$(findings_of "$t")
  rate=$(awk -v n="$execs" -v s="$wall" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }')
  [ "$found" -eq 0 ] || failed=$((failed + 1))
  note "$t: execs $execs in $wall s ($rate/s) over ${chunks[$t]} processes, cov $(most 'cov:'), ft $(most 'ft:')," \
       "peak rss $(most 'stat::peak_rss_mb:') MB, corpus $(ls "$work/corpus/$t" | wc -l) files, findings $found"
  if [ "$found" -gt 0 ]; then
    ls "$work/findings/$t" | sed 's/^/   /' | tee -a "$summary"
    cat "${logs[@]}" | grep -m6 -E 'SUMMARY|ERROR: libFuzzer|runtime error|ERROR: AddressSanitizer' | tee -a "$summary"
  fi
done
note "finished $(date -u +%FT%TZ) after $wall s; targets with a finding: $failed"
# At most 8 files come back: the summary and three archives.
tar -C "$work" -czf "$OUT/logs.tar.gz" logs
tar -C "$work" -czf "$OUT/findings.tar.gz" findings
tar -C "$work" -czf "$OUT/corpus.tar.gz" corpus
ls -l "$OUT"
[ "$failed" -eq 0 ]
