#!/usr/bin/env bash
# The second Table 1 device call (docs/TABLE1.md): what the first leaves open.
#  1. the HF transformers peer beside our driver on the same truncated model, lengths and
#     configs, both warmed up and both with a bf16 indexer (HF has no fp8 one);
#  2. decode at 10K and 200K over 64 steps, with the phase split of a decode step;
#  3. the greedy search's cost on the full 30B shape (random ids; its progress line's rate and ETA);
#  4. where decode time goes: an Nsight Systems kernel summary of a short-prompt decode run,
#     when nsys is installed.
#   scripts/device-table1-extra.sh      (logs and results under $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(pwd)/device-out}
top=$OUT
OUT=$top/logs
mkdir -p "$OUT"
trap 'for f in decode.md decode.json peer-ours.md; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$top/"; done; tar czf "$top/logs.tar.gz" -C "$top" logs && rm -rf "$OUT"' EXIT
build=/tmp/ic-t1-build
t0=$(date +%s)
echo "== build ($(nproc) cores)"
cmake -S . -B "$build" -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DIC_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target indexcache >>"$OUT/build.log" 2>&1 || {
  grep -E "error|warning" "$OUT/build.log" | head -40
  exit 1
}
grep -c "warning" "$OUT/build.log" | sed 's/^/build warnings: /'
echo "build: $(( $(date +%s) - t0 )) s"
bin=$build/indexcache
P=glm47-flash-dsa
echo "== 1. peer: ours and HF, 4 layers, bf16 indexer"
"$bin" table1 --random-weights $P --device cuda --layers 4 --lengths 2048,8192,16384 --configs dsa,1/4 \
  --decode-steps 16 --json "$OUT/peer-ours.json" --md "$OUT/peer-ours.md" 2>"$OUT/peer-ours.log" >/dev/null
cat "$OUT/peer-ours.md"
PYTHONUNBUFFERED=1 timeout 150 python3 scripts/hf_table1_peer.py --preset $P --layers 4 \
  --lengths 2048,8192,16384 --configs dsa,1/4 --decode-steps 16 --out "$OUT/hf-peer.json" >/dev/null 2>"$OUT/hf-peer.log"
cat "$OUT/hf-peer.log"
echo "== 2. decode, 47 layers, 64 steps"
timeout 200 "$bin" table1 --random-weights $P --device cuda --lengths 10000,200000 --configs dsa,1/4 \
  --decode-steps 64 --indexer-fp8 --json "$OUT/decode.json" --md "$OUT/decode.md" 2>"$OUT/decode.log" >/dev/null
cat "$OUT/decode.md"
echo "== 3. search cost, 47 layers, 4 windows of 8192 random ids, keep 12"
timeout 100 "$bin" search --random-weights $P --device cuda --random-tokens --ctx 8192 --windows 4 --keep 12 \
  >"$OUT/search.out" 2>"$OUT/search.log"
echo "search rc $?"
tr '\r' '\n' <"$OUT/search.log" | grep -v '^\s*$' | sed -n '1,6p;$p'
echo "== 4. decode kernels (nsys)"
if command -v nsys >/dev/null; then
  timeout 120 nsys profile -t cuda -o "$OUT/dec" --force-overwrite true --stats=false "$bin" table1 --random-weights $P \
    --device cuda --lengths 512 --configs dsa --decode-steps 64 >"$OUT/nsys.log" 2>&1
  nsys stats -r cuda_gpu_kern_sum,cuda_api_sum -f csv -o "$OUT/dec" "$OUT/dec.nsys-rep" >>"$OUT/nsys.log" 2>&1
  ls "$OUT" | grep -i csv
  for f in "$OUT"/dec_cuda_gpu_kern_sum*.csv "$OUT"/dec_cuda_api_sum*.csv; do
    [ -f "$f" ] && head -12 "$f" | cut -c1-200
  done
  rm -f "$OUT"/dec.nsys-rep "$OUT"/dec.sqlite
else
  echo "nsys not installed"
fi
echo "total: $(( $(date +%s) - t0 )) s"
