#!/usr/bin/env bash
# Command-line checks run by ctest: real invocations of build/indexcache on the real model,
# their JSON outputs, and clear errors (exit 1 and a message) for bad input.
# Usage: cli_test.sh INDEXCACHE_BINARY SOURCE_DIR CASE
set -uo pipefail
bin=$1 src=$2 case=$3
model=${IC_MODEL:-$src/models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$model" ]; then
  [ "${IC_REQUIRE_MODEL:-0}" = 1 ] && { echo "model missing: $model"; exit 1; }
  echo "model missing, skipped"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
expect_error() {  # expect_error PATTERN CMD...: exit status 1 and PATTERN on stderr
  local pattern=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  [ $rc -eq 1 ] || fail "expected exit 1, got $rc from: $*"
  grep -q -- "$pattern" "$tmp/err" || fail "stderr lacks '$pattern': $(cat "$tmp/err")"
}
case $case in
  tokenize)
    out=$("$bin" tokenize -m "$model" -p "The capital of France is" --json) || fail "tokenize failed"
    [ "$out" = "[504,3575,282,4649,314]" ] || fail "tokenize gave $out" ;;
  generate)
    a=$("$bin" generate -m "$model" -p "The capital of France is" -n 8 --json -t 1) || fail "generate failed"
    b=$("$bin" generate -m "$model" -p "The capital of France is" -n 8 --json -t 2) || fail "generate failed"
    python3 - "$a" "$b" <<'PY' || exit 1
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["tokens"] == b["tokens"], ("greedy output depends on threads", a["tokens"], b["tokens"])
assert len(a["tokens"]) == 8 and a["text"].startswith(" Paris"), a
PY
    chat=$("$bin" generate -m "$model" --chat -p "What is 2+2?" -n 24 --temp 0.7 --seed 3 --top-p 0.9 2>/dev/null) || fail "chat failed"
    [ -n "$chat" ] || fail "chat produced nothing" ;;
  perplexity)
    head -c 6000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    out=$("$bin" perplexity -m "$model" -f "$tmp/t.txt" -c 256 --json) || fail "perplexity failed"
    python3 - "$out" <<'PY' || exit 1
import json, sys
r = json.loads(sys.argv[1])
assert r["tokens"] > 1000 and r["windows"] == -(-r["tokens"] // 256), r
assert 3 < r["ppl"] < 60, r
PY
    ;;
  errors)
    expect_error "cannot open\|No such\|open" "$bin" generate -m /nonexistent.gguf -p hi
    head -c 100000 "$model" > "$tmp/trunc.gguf"
    expect_error "gguf\|GGUF\|past the end" "$bin" generate -m "$tmp/trunc.gguf" -p hi
    printf 'not a gguf file at all' > "$tmp/bad.gguf"
    expect_error "magic" "$bin" tokenize -m "$tmp/bad.gguf" -p hi
    expect_error "exceeds the model's context" "$bin" generate -m "$model" -p hi -n 9000
    echo "hello" > "$tmp/t.txt"
    expect_error "exceeds the model's trained context" "$bin" perplexity -m "$model" -f "$tmp/t.txt" -c 10000
    "$bin" generate --help | grep -q -- "--top-p" || fail "generate --help lacks --top-p"
    "$bin" perplexity --help | grep -q -- "--ctx-size" || fail "perplexity --help lacks --ctx-size"
    # A truncated, a corrupted and a mismatched file of each format: exit 1, a message naming the
    # file and what is wrong, and no output file (--json / -o) left behind.
    no_output() { [ ! -e "$1" ] || fail "a failed run left $1 behind"; }
    hf=$src/tests/data/hf/glm_moe_dsa-tiny
    for v in trunc conf miss shape tok tokbpe; do cp -r "$hf" "$tmp/$v"; done
    truncate -s 5000 "$tmp/trunc/model-00001-of-00003.safetensors"
    expect_error "trunc/model-00001-of-00003.safetensors: tensor .* run past the end" \
      "$bin" search -m "$tmp/trunc" -f "$tmp/t.txt" --ctx 48 --windows 1 --json "$tmp/s.json"
    no_output "$tmp/s.json"
    head -c 61 "$hf/config.json" > "$tmp/conf/config.json"
    expect_error "conf/config.json is not valid JSON" "$bin" generate -m "$tmp/conf" -p hi -n 1
    rm "$tmp/miss/model-00002-of-00003.safetensors"
    expect_error "shard .*miss/model-00002-of-00003.safetensors is missing" "$bin" generate -m "$tmp/miss" -p hi -n 1
    python3 - "$tmp/shape/config.json" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1])); c["hidden_size"] *= 2; json.dump(c, open(sys.argv[1], "w"))
PY
    expect_error "shape/model-00001-of-00003.safetensors has shape \[64\] in the checkpoint, \[128\] expected" \
      "$bin" generate -m "$tmp/shape" -p hi -n 1
    # tokenizer.json: cut short, another model type, an added token outside the vocabulary.
    head -c 20000 "$hf/tokenizer.json" > "$tmp/tok/tokenizer.json"
    expect_error "tok/tokenizer.json is not valid JSON" "$bin" tokenize -m "$tmp/tok" -p hi
    python3 - "$hf/tokenizer.json" "$tmp/tokbpe/tokenizer.json" <<'PY' || exit 1
import json, sys
t = json.load(open(sys.argv[1])); t["model"]["type"] = "WordPiece"; json.dump(t, open(sys.argv[2], "w"))
PY
    expect_error "tokbpe/tokenizer.json: model.type is \"WordPiece\": only BPE" "$bin" tokenize -m "$tmp/tokbpe" -p hi
    python3 - "$hf/tokenizer.json" "$tmp/tok/tokenizer.json" <<'PY' || exit 1
import json, sys
t = json.load(open(sys.argv[1])); t["added_tokens"][0]["id"] = 10**6; json.dump(t, open(sys.argv[2], "w"))
PY
    expect_error "tok/tokenizer.json: added_tokens\[0\]: id 1000000 is not below" "$bin" tokenize -m "$tmp/tok" -p hi
    # Indexer files (the fuzz seeds: 4 layers of width 16, so "mismatched" for this model as is).
    idx=$src/fuzz/corpus/indexer_file/FSSS.safetensors
    head -c 2000 "$idx" > "$tmp/cut.safetensors"
    expect_error "cut.safetensors: tensor 'blk.0.indexer.wq' .* run past the end" \
      "$bin" perplexity -m "$model" -f "$tmp/t.txt" --indexers "$tmp/cut.safetensors"
    sed 's/indexers-v1/indexers-v9/' "$idx" > "$tmp/v9.safetensors"
    expect_error "v9.safetensors: not an indexcache indexer file (metadata indexcache.format is 'indexers-v9')" \
      "$bin" perplexity -m "$model" -f "$tmp/t.txt" --indexers "$tmp/v9.safetensors"
    expect_error "FSSS.safetensors: indexers were made for 4 layers of width 16, the model has 30 of width 576" \
      "$bin" perplexity -m "$model" -f "$tmp/t.txt" --indexers "$idx"
    # Search JSON: cut short, a field of the wrong type, another command's JSON, another model's.
    sj=$src/fuzz/corpus/search_json
    expect_error "truncated.json: not valid JSON" "$bin" search-plot "$sj/truncated.json" -o "$tmp/p.svg"
    no_output "$tmp/p.svg"
    python3 - "$sj/small.json" "$tmp/types.json" <<'PY' || exit 1
import json, sys
j = json.load(open(sys.argv[1])); j["trajectory"][1]["loss"] = "3.7"; json.dump(j, open(sys.argv[2], "w"))
PY
    expect_error "types.json: trajectory\[1\].loss is string, not a number" "$bin" search-plot "$tmp/types.json" -o "$tmp/p.svg"
    no_output "$tmp/p.svg"
    echo '{"n_layers": 30, "topk": 8}' > "$tmp/other.json"
    expect_error "other.json: not a search JSON" "$bin" search-plot "$tmp/other.json" -o "$tmp/p.svg"
    no_output "$tmp/p.svg"
    expect_error "search result '$sj/small.json', pattern '1/2': layer pattern 'FSFS' has 4 layers but the model has 30" \
      "$bin" eval -m "$model" --config "a=$idx@search=$sj/small.json:1/2" -f "$tmp/t.txt" --sections ppl --json "$tmp/e.json"
    no_output "$tmp/e.json"
    # GGUF: a header count corrupted (2^40 tensors), a file of another architecture, a valid GGUF
    # that is no model.
    python3 - "$model" "$tmp/count.gguf" "$tmp/arch.gguf" <<'PY' || exit 1
import sys
b = bytearray(open(sys.argv[1], "rb").read())
c = bytearray(b[:1 << 20]); c[8:16] = (1 << 40).to_bytes(8, "little"); open(sys.argv[2], "wb").write(c)
k = b.index(b"general.architecture") + len(b"general.architecture")
n = int.from_bytes(b[k + 4:k + 12], "little"); b[k + 12:k + 12 + n] = b"gemma"[:n].ljust(n, b"x")
open(sys.argv[3], "wb").write(b)
PY
    expect_error "count.gguf: tensor count 1099511627776 is implausible" "$bin" tokenize -m "$tmp/count.gguf" -p hi
    expect_error "arch.gguf: architecture 'gemma.*' is not supported" "$bin" generate -m "$tmp/arch.gguf" -p hi -n 1
    expect_error "metadata key 'tokenizer.ggml.model' not found in .*all_types.gguf" \
      "$bin" tokenize -m "$src/fuzz/corpus/gguf/all_types.gguf" -p hi
    # The index and a shard's header: cut short, a dtype corrupted, a tensor mapped to the wrong shard.
    for v in idxcut idxmap dtype tcut tctype tcmis pat; do cp -r "$hf" "$tmp/$v"; done
    head -c 100 "$hf/model.safetensors.index.json" > "$tmp/idxcut/model.safetensors.index.json"
    expect_error "idxcut/model.safetensors.index.json: index is not valid JSON" "$bin" generate -m "$tmp/idxcut" -p hi -n 1
    python3 - "$tmp/idxmap/model.safetensors.index.json" "$tmp/dtype/model-00001-of-00003.safetensors" <<'PY' || exit 1
import json, sys
j = json.load(open(sys.argv[1])); m = j["weight_map"]
m[next(k for k, v in m.items() if v == "model-00001-of-00003.safetensors")] = "model-00002-of-00003.safetensors"
json.dump(j, open(sys.argv[1], "w"))
b = bytearray(open(sys.argv[2], "rb").read()); n = int.from_bytes(b[:8], "little")
i = b.index(b'"dtype":"BF16"', 8, 8 + n) + 9; b[i:i + 2] = b"XX"; open(sys.argv[2], "wb").write(b)
PY
    expect_error "idxmap/model.safetensors.index.json maps tensor '.*' to shard .*model-00002-of-00003.safetensors, but that shard does not contain it" \
      "$bin" generate -m "$tmp/idxmap" -p hi -n 1
    expect_error "dtype/model-00001-of-00003.safetensors: tensor '.*': unknown dtype 'XX16'" \
      "$bin" search -m "$tmp/dtype" -f "$tmp/t.txt" --ctx 48 --windows 1 --json "$tmp/s.json"
    no_output "$tmp/s.json"
    # fp8 block scales: blocks of another size in config.json (wrong block count), a scale's dtype corrupted.
    fp8=$src/tests/data/hf/deepseek_v32-fp8-tiny
    for v in blk sdt; do cp -r "$fp8" "$tmp/$v"; done
    python3 - "$tmp/blk/config.json" "$tmp/sdt/model-00001-of-00003.safetensors" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1])); c["quantization_config"]["weight_block_size"] = [64, 64]; json.dump(c, open(sys.argv[1], "w"))
b = bytearray(open(sys.argv[2], "rb").read()); n = int.from_bytes(b[:8], "little")
i = b.index(b'_scale_inv":{"dtype":"F32"', 8, 8 + n) + 22; b[i:i + 3] = b"I32"; open(sys.argv[2], "wb").write(b)
PY
    expect_error "scale tensor '.*_scale_inv' in .*blk/model-00001-of-00003.safetensors has shape \[2, 1\], but fp8 weight '.*' of shape \[192, 48\] in 64 x 64 blocks needs \[3, 1\]" \
      "$bin" generate -m "$tmp/blk" -p hi -n 1
    expect_error "scale tensor '.*_scale_inv' in .*sdt/model-00001-of-00003.safetensors is I32, F32 expected" \
      "$bin" generate -m "$tmp/sdt" -p hi -n 1
    # tokenizer_config.json: cut short, a chat template of the wrong type, an added token that
    # tokenizer.json has otherwise.
    head -c 30 "$hf/tokenizer_config.json" > "$tmp/tcut/tokenizer_config.json"
    expect_error "tcut/tokenizer_config.json is not valid JSON" "$bin" tokenize -m "$tmp/tcut" -p hi
    python3 - "$tmp/tctype/tokenizer_config.json" "$tmp/tcmis/tokenizer_config.json" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1])); c["chat_template"] = 5; json.dump(c, open(sys.argv[1], "w"))
c = json.load(open(sys.argv[2])); c["added_tokens_decoder"] = {"0": {"content": "<not-this>"}}; json.dump(c, open(sys.argv[2], "w"))
PY
    expect_error "tctype/tokenizer_config.json: chat_template is an integer (5), a string or a list of named templates expected" \
      "$bin" generate --chat -m "$tmp/tctype" -p hi -n 1
    expect_error "tcmis/tokenizer_config.json: added_tokens_decoder\[\"0\"\]: content '<not-this>' differs from .*tcmis/tokenizer.json's token 0" \
      "$bin" tokenize -m "$tmp/tcmis" -p hi
    # Pattern strings: too short for the model, a letter that is neither F nor S; indexer_types in
    # config.json with an unknown entry.
    expect_error "layer pattern 'FSF' has 3 layers but the model has 4" "$bin" generate -m "$hf" -p hi -n 1 --pattern FSF
    expect_error "layer pattern 'FXSF': character 1 is 'X', only F (full) and S (shared) are allowed" \
      "$bin" generate -m "$hf" -p hi -n 1 --pattern FXSF
    python3 - "$tmp/pat/config.json" <<'PY' || exit 1
import json, sys
c = json.load(open(sys.argv[1])); c["indexer_types"] = ["full", "bogus", "shared", "full"]; json.dump(c, open(sys.argv[1], "w"))
PY
    expect_error "pat/config.json: 'indexer_types'\[1\] is \"bogus\", \"full\" or \"shared\" expected" \
      "$bin" generate -m "$tmp/pat" -p hi -n 1
    # A text that is not UTF-8 (Latin-1, stray continuation bytes, NUL) is read as bytes: the
    # byte-level tokenizers have a token for each, so it loads and scores.
    python3 -c 'import sys; open(sys.argv[1], "wb").write(b"".join(b"caf\xe9 \xff\xfe\x80\x00 \xc3( line %d\n" % i for i in range(12)))' \
      "$tmp/latin1.txt"
    out=$("$bin" perplexity -m "$hf" -f "$tmp/latin1.txt" -c 32 --json 2>/dev/null) || fail "perplexity on a non-UTF-8 text failed"
    python3 -c 'import json, math, sys; r = json.loads(sys.argv[1]); assert r["tokens"] > 100 and math.isfinite(r["ppl"]), r' "$out" ||
      exit 1 ;;
  family)
    # The DSA family from HF folders (tests/data/hf, made by scripts/hf_oracle.py): every generic
    # command runs on it, the IndexCache pattern comes from config.json or --pattern, and commands
    # that do not support the family yet say so.
    dsa=$src/tests/data/hf/glm_moe_dsa-tiny lite=$src/tests/data/hf/glm4_moe_lite-tiny
    out=$("$bin" generate -m "$dsa" -p "The pass key is" -n 6 --json) || fail "generate failed"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert len(r["tokens"]) == 6, r' "$out" || exit 1
    "$bin" generate -m "$dsa" -p "The pass key is" -n 2 2>"$tmp/err" >/dev/null || fail "generate failed"
    grep -q "pattern FFFF" "$tmp/err" || fail "all-F pattern not reported: $(cat "$tmp/err")"
    "$bin" generate -m "$dsa" -p "The pass key is" -n 6 --pattern FSFS 2>"$tmp/err" >/dev/null || fail "pattern run failed"
    grep -q "pattern FSFS (2 of 4" "$tmp/err" || fail "--pattern not applied: $(cat "$tmp/err")"
    head -c 4000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    out=$("$bin" perplexity -m "$dsa" -f "$tmp/t.txt" -c 64 --json 2>/dev/null) || fail "perplexity failed"
    python3 - "$out" <<'PY' || exit 1
import json, math, sys
r = json.loads(sys.argv[1])
assert r["windows"] == -(-r["tokens"] // 64) and math.isfinite(r["ppl"]) and r["ppl"] > 1, r
assert r["pattern"] == "FFFF" and r["topk"] == 8, r
PY
    # --tp 2 (docs/PARALLEL.md): two in-process ranks give the same greedy tokens as one here, and
    # the same perplexity to f32 rounding; a head count the ranks do not divide is refused.
    out1=$("$bin" generate -m "$dsa" -p "The pass key is" -n 6 --json 2>/dev/null) || fail "generate failed"
    out2=$("$bin" generate -m "$dsa" -p "The pass key is" -n 6 --json --tp 2 --ep 2 2>"$tmp/err") || fail "generate --tp 2 failed: $(cat "$tmp/err")"
    "$bin" generate -m "$dsa" -p "The pass key is" -n 1 --tp 2 --ep 2 2>"$tmp/err" >/dev/null || fail "generate --tp 2 failed"
    grep -q "parallel: --tp 2 --ep 2, 2 ranks" "$tmp/err" || fail "--tp 2 not reported: $(cat "$tmp/err")"
    python3 -c 'import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); assert a["tokens"] == b["tokens"], (a, b)' "$out1" "$out2" || exit 1
    out2=$("$bin" generate -m "$dsa" -p "The pass key is" -n 6 --json --tp 2 --ep 2 --ep-a2a 2>/dev/null) || fail "generate --ep-a2a failed"
    python3 -c 'import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); assert a["tokens"] == b["tokens"], (a, b)' "$out1" "$out2" || exit 1
    out2=$("$bin" perplexity -m "$dsa" -f "$tmp/t.txt" -c 64 --json --tp 2 2>/dev/null) || fail "perplexity --tp 2 failed"
    python3 - "$out" "$out2" <<'PY' || exit 1
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:])
assert a["tokens"] == b["tokens"] and abs(a["ppl"] - b["ppl"]) <= 1e-4 * a["ppl"], (a, b)
PY
    expect_error "4 attention heads (num_attention_heads) do not split over --tp 3" "$bin" generate -m "$dsa" -p hi -n 1 --tp 3
    expect_error "apply to the DSA family" "$bin" generate -m "$model" -p hi -n 1 --tp 2
    expect_error "run on the CPU path so far" "$bin" generate -m "$dsa" -p hi -n 1 --tp 2 --device cuda
    "$bin" bench -m "$lite" -p 24 -n 4 --json >/dev/null 2>&1 || fail "bench failed on the dense MLA model"
    ids=$("$bin" tokenize -m "$dsa" -p "Hello, world" --json) || fail "tokenize failed"
    [ "${ids:0:1}" = "[" ] || fail "tokenize gave $ids"
    expect_error "dense MLA model without indexers" "$bin" generate -m "$lite" -p hi -n 1 --pattern FSS
    expect_error "first layer must be F" "$bin" generate -m "$dsa" -p hi -n 1 --pattern SFFF
    "$bin" search -m "$dsa" -f "$tmp/t.txt" --ctx 48 --windows 2 --keep 1 --json "$tmp/s.json" -q >/dev/null 2>&1 ||
      fail "search on the DSA checkpoint failed"
    python3 - "$tmp/s.json" <<'PY' || exit 1
import json, sys
j = json.load(open(sys.argv[1]))
assert j["dense_loss"] is None and j["all_f_loss"] > 0, j
assert j["cost"]["work_ratio"] is None and j["cost"]["naive_layer_evals"] > j["cost"]["layer_evals"], j["cost"]
assert len(j["trajectory"]) == 3 and j["trajectory"][-1]["pattern"] == "FSSS", j["trajectory"]
PY
    "$bin" overlap -m "$dsa" -f "$tmp/t.txt" --ctx 64 --json "$tmp/o.json" >/dev/null 2>&1 || fail "overlap failed"
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["n_layers"] == 4 and j["topk"] == 8, j' "$tmp/o.json" || exit 1
    "$bin" eval -m "$dsa" --config dsa=model --config q=model@freq=2 -f "$tmp/t.txt" --ctx 64 --sections ppl,passkey \
      --passkey-lengths 160 --passkey-trials 2 --passkey-depths 50 --json "$tmp/e.json" >/dev/null 2>&1 || fail "eval failed"
    python3 - "$tmp/e.json" <<'PY' || exit 1
import json, sys
j = json.load(open(sys.argv[1]))
c = {x["name"]: x for x in j["configs"]}
assert c["dsa"]["pattern"] == "FFFF" and c["q"]["pattern"] == "FSFS", c
assert c["dsa"]["perplexity"][0]["ppl"] != c["q"]["perplexity"][0]["ppl"], c
assert c["q"]["passkey"]["cells"][0]["trials"] == 2, c["q"]["passkey"]
PY
    "$bin" eval -m "$dsa" --config dsa=model -f "$tmp/t.txt" --ctx 64 --sections ppl --tp 2 --ep 2 --json "$tmp/e2.json" \
      >/dev/null 2>&1 || fail "eval --tp 2 failed"
    python3 - "$tmp/e.json" "$tmp/e2.json" <<'PY' || exit 1
import json, sys
a, b = ({c["name"]: c for c in json.load(open(f))["configs"]} for f in sys.argv[1:])
pa, pb = a["dsa"]["perplexity"][0]["ppl"], b["dsa"]["perplexity"][0]["ppl"]
assert abs(pa - pb) <= 1e-4 * pa, (pa, pb)
PY
    expect_error "has no indexer tensors" "$bin" eval -m "$src/tests/data/hf/glm_moe_dsa-shared-tiny" --config a=model \
      --config b=model@FFFF -f "$tmp/t.txt" --ctx 64 --sections ppl
    expect_error "no dense form" "$bin" eval -m "$dsa" --config a=dense -f "$tmp/t.txt" --ctx 64 --sections ppl
    expect_error "carries its own" "$bin" search -m "$dsa" --indexers x -f "$tmp/t.txt"
    expect_error "top-k are the checkpoint's" "$bin" distill --mode warmup -m "$dsa" --data "$tmp" --topk 4 -o "$tmp/x"
    expect_error "carries its own" "$bin" generate -m "$dsa" -p hi -n 1 --indexers x
    mkdir "$tmp/empty"
    expect_error "needs a config.json" "$bin" generate -m "$tmp/empty" -p hi -n 1
    # --chat: the folder's chat format (DeepSeek-V3.2 by model_type, GLM-4.7-Flash by its template),
    # one BOS, and the prompt the format renders (docs/FAMILY.md "Chat templates").
    v32=$src/tests/data/hf/deepseek_v32-tiny
    out=$("$bin" generate -m "$v32" --chat -p "Hi" --system "Be brief." -n 2 --json) || fail "chat on deepseek_v32 failed"
    ids=$("$bin" tokenize -m "$v32" -p "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜></think>" --json) ||
      fail "tokenize failed"
    python3 - "$out" "$ids" <<'PY' || exit 1
import json, sys
r, ids = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert r["chat_format"] == "deepseek-v3.2" and len(r["tokens"]) <= 2, r
assert r["prompt_tokens"] == len(ids) and ids.count(ids[0]) == 1, (r, ids)
PY
    out=$("$bin" generate -m "$lite" --chat -p "Hi" -n 2 --json) || fail "chat on glm4_moe_lite failed"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["chat_format"] == "glm4", r' "$out" || exit 1
    "$bin" generate -m "$lite" --chat --thinking off -p "Hi" -n 1 2>"$tmp/err" >/dev/null || fail "chat --thinking failed"
    grep -q "chat format: glm4" "$tmp/err" || fail "chat format not reported: $(cat "$tmp/err")"
    out=$("$bin" generate -m "$lite" --chat --chat-format glm4.5 -p "Hi" -n 1 --json) || fail "--chat-format failed"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["chat_format"] == "glm4.5", r' "$out" || exit 1
    expect_error "glm_moe_dsa-tiny: no chat template" "$bin" generate -m "$dsa" --chat -p hi -n 1
    expect_error "unknown chat format .llama3." "$bin" generate -m "$dsa" --chat --chat-format llama3 -p hi -n 1
    cp -r "$lite" "$tmp/lite"
    python3 - "$tmp/lite/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["chat_template"] = "{{ messages }}"; json.dump(c, open(sys.argv[1], "w"))
PY
    expect_error "lite/tokenizer_config.json: a chat template this build does not know" \
      "$bin" generate -m "$tmp/lite" --chat -p hi -n 1 ;;
  family_distill)
    # Distillation on the DSA family (docs/DISTILL.md, "The DSA family"): train the checkpoint's own
    # indexers for a pattern, write them back into a new HF folder with the pattern in config.json,
    # read it back (perplexity and per-layer recall); the DSA warm-up of the dense MLA model.
    dsa=$src/tests/data/hf/glm_moe_dsa-tiny lite=$src/tests/data/hf/glm4_moe_lite-tiny
    [ -d "$dsa" ] || { echo "tests/data/hf missing, skipped"; exit 77; }
    head -c 4000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    "$bin" distill -m "$dsa" --mode pattern --pattern FSSF --data "$tmp/t.txt" --heldout "$tmp/t.txt" \
      --heldout-windows 2 -c 48 -b 2 --steps 4 --lr 3e-3 -o "$tmp/hf" --json >"$tmp/ev.json" 2>"$tmp/err" ||
      fail "family distill failed: $(cat "$tmp/err")"
    grep -q "wrote $tmp/hf: 10 indexer tensors of 2 F layers" "$tmp/err" || fail "no write-back report: $(cat "$tmp/err")"
    python3 - "$tmp/ev.json" "$tmp/hf" <<'PY' || exit 1
import json, os, sys
r = json.load(open(sys.argv[1]))
assert r["pattern"] == "FSSF" and [l["source"] for l in r["layers"]] == [0, 0, 0, 3], r
assert all(0 <= l["recall"] <= 1 and l["kl"] >= 0 for l in r["layers"]), r
c = json.load(open(os.path.join(sys.argv[2], "config.json")))
assert c["index_topk_pattern"] == "FSSF" and c["indexer_types"] == ["full", "shared", "shared", "full"], c
ix = json.load(open(os.path.join(sys.argv[2], "model.safetensors.index.json")))["weight_map"]
assert ix["model.layers.3.self_attn.indexer.wq_b.weight"] == "model-indexcache-indexers.safetensors", ix
assert "model.layers.1.self_attn.indexer.wq_b.weight" not in ix, ix  # S layers' indexers left out
PY
    "$bin" perplexity -m "$tmp/hf" -f "$tmp/t.txt" -c 64 2>"$tmp/err" >/dev/null || fail "perplexity on the output failed: $(cat "$tmp/err")"
    grep -q "pattern FSSF" "$tmp/err" || fail "the output's pattern is not FSSF: $(cat "$tmp/err")"
    expect_error "has no indexer tensors" "$bin" eval -m "$tmp/hf" --config a=model@FFFF --sections recall -f "$tmp/t.txt"
    "$bin" eval -m "$tmp/hf" --config t=model --config a=model@FSSS --sections recall -f "$tmp/t.txt" --recall-ctx 48 \
      --recall-windows 2 --json "$tmp/r.json" >/dev/null 2>"$tmp/err" || fail "family eval recall failed: $(cat "$tmp/err")"
    python3 - "$tmp/r.json" "$tmp/ev.json" <<'PY' || exit 1
import json, sys
c = {x["name"]: x for x in json.load(open(sys.argv[1]))["configs"]}
ev = json.load(open(sys.argv[2]))
t, a = c["t"]["recall"], c["a"]["recall"]
assert [l["source"] for l in t["layers"]] == [0, 0, 0, 3] and [l["source"] for l in a["layers"]] == [0, 0, 0, 0], c
# the same windows, teacher and weights as distill's own held-out evaluation (bf16-rounded on disk)
for x, y in zip(t["layers"], ev["layers"]):
    assert abs(x["kl"] - y["kl"]) <= 0.05 * max(1.0, y["kl"]), (x, y)
PY
    expect_error "exists" "$bin" distill -m "$dsa" --mode warmup --data "$tmp/t.txt" -c 48 --steps 1 -o "$tmp/hf"
    expect_error "use --mode pattern" "$bin" distill -m "$dsa" --pattern FSSF --data "$tmp/t.txt" -o "$tmp/o2"
    "$bin" distill -m "$lite" --mode warmup --heads 2 --head-dim 16 --topk 8 --data "$tmp/t.txt" -c 48 --steps 2 \
      -o "$tmp/lite.safetensors" 2>"$tmp/err" >/dev/null || fail "dense MLA warm-up failed: $(cat "$tmp/err")"
    grep -q "x-fed indexer 2x16 top-k 8" "$tmp/err" || fail "no warm-up report: $(cat "$tmp/err")"
    [ -s "$tmp/lite.safetensors" ] || fail "no indexer file written" ;;
  dsa)
    "$bin" init-indexers -m "$model" -o "$tmp/idx.safetensors" --heads 2 --head-dim 32 --topk 16 -s 1 2>/dev/null ||
      fail "init-indexers failed"
    head -c 3000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    "$bin" perplexity -m "$model" -f "$tmp/t.txt" -c 128 --indexers "$tmp/idx.safetensors" --index-freq 4 \
      2>"$tmp/err" >"$tmp/out" || fail "DSA perplexity failed: $(cat "$tmp/err")"
    grep -q "pattern FSSSFSSS" "$tmp/err" || fail "no DSA report: $(cat "$tmp/err")"
    grep -q "75% of indexers removed\|73% of indexers removed" "$tmp/err" || fail "no savings report: $(cat "$tmp/err")"
    expect_error "first layer must be F" "$bin" perplexity -m "$model" -f "$tmp/t.txt" --indexers "$tmp/idx.safetensors" \
      --pattern "S$(printf 'F%.0s' $(seq 29))"
    expect_error "has 3 layers but the model has 30" "$bin" perplexity -m "$model" -f "$tmp/t.txt" \
      --indexers "$tmp/idx.safetensors" --pattern FSF
    expect_error "need --indexers" "$bin" perplexity -m "$model" -f "$tmp/t.txt" --topk 8
    expect_error "only means something with --index-freq" "$bin" perplexity -m "$model" -f "$tmp/t.txt" \
      --indexers "$tmp/idx.safetensors" --index-offset 3
    expect_error "not an indexcache indexer file\|safetensors" "$bin" perplexity -m "$model" -f "$tmp/t.txt" \
      --indexers "$model" ;;
  distill)
    mkdir -p "$tmp/train"
    head -c 16000 "$src/tests/data/reference_text.txt" > "$tmp/train/a.txt"
    tail -c 8000 "$src/tests/data/reference_text.txt" > "$tmp/held.txt"
    common=(-m "$model" --data "$tmp/train" --heldout "$tmp/held.txt" --heldout-windows 2 --heads 2 --head-dim 32
            --topk 16 -c 64 -b 2 --steps 4 --lr 0.01 --mode pattern --index-freq 10 -o "$tmp/idx.safetensors")
    "$bin" distill "${common[@]}" --save-every 2 --json >"$tmp/out" 2>"$tmp/err" || fail "distill failed: $(cat "$tmp/err")"
    grep -q "step 4/4 | loss" "$tmp/err" || fail "no progress lines: $(cat "$tmp/err")"
    python3 - "$(cat "$tmp/out")" <<'PY' || exit 1
import json, sys
r = json.loads(sys.argv[1])
assert r["windows"] == 2 and r["tokens"] == 128 and len(r["layers"]) == 30, r
assert [l["source"] for l in r["layers"]][:12] == [0]*10 + [10]*2, r
assert all(0 <= l["recall"] <= 1 and l["kl"] >= 0 for l in r["layers"]), r
PY
    # The output is a plain indexer file: perplexity runs with it, under its own pattern.
    "$bin" perplexity -m "$model" -f "$tmp/held.txt" -c 64 --max-tokens 256 --indexers "$tmp/idx.safetensors" \
      2>"$tmp/err" >/dev/null || fail "perplexity with trained indexers failed: $(cat "$tmp/err")"
    grep -q "pattern FSSSSSSSSSFSSSSSSSSSFSSSSSSSSS" "$tmp/err" || fail "pattern not kept: $(cat "$tmp/err")"
    # --eval-only on the written file reproduces the post-training evaluation exactly.
    "$bin" distill -m "$model" --eval-only --indexers "$tmp/idx.safetensors" --heldout "$tmp/held.txt" \
      --heldout-windows 2 -c 64 --json >"$tmp/eval" 2>/dev/null || fail "eval-only failed"
    cmp -s <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.pop("seconds"); print(r)' "$tmp/out") \
           <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.pop("seconds"); print(r)' "$tmp/eval") ||
      fail "eval-only differs from the evaluation after training"
    # A resumed run refuses another configuration, naming the field.
    expect_error "lr = '0.01', this run has lr = '0.02'" "$bin" distill "${common[@]/0.01/0.02}" \
      --resume "$tmp/idx.safetensors.ckpt"
    # --time-limit: one step always runs; the output and checkpoint say where it stopped; --resume ends the run.
    tl=(-m "$model" --data "$tmp/train" --heads 2 --head-dim 32 --topk 16 -c 64 -b 2 --steps 6 -o "$tmp/tl.safetensors")
    "$bin" distill "${tl[@]}" --time-limit 0.001 >/dev/null 2>"$tmp/err" || fail "distill --time-limit failed: $(cat "$tmp/err")"
    grep -q "stopped by --time-limit 0.001 s after step 1 of 6" "$tmp/err" || fail "no stop line: $(cat "$tmp/err")"
    python3 - "$tmp/tl.safetensors" <<'PY' || fail "steps_done metadata"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert meta["indexcache.steps_done"] == "1 of 6 (stopped by --time-limit)", meta["indexcache.steps_done"]
PY
    "$bin" distill "${tl[@]}" --resume "$tmp/tl.safetensors.ckpt" >/dev/null 2>"$tmp/err" || fail "resume failed: $(cat "$tmp/err")"
    grep -q "step 6/6 | loss" "$tmp/err" && ! grep -q "stopped by" "$tmp/err" || fail "resume did not finish: $(cat "$tmp/err")"
    expect_error "too little text" "$bin" distill -m "$model" --data "$tmp/held.txt" -c 4000 -o "$tmp/x.safetensors"
    expect_error "needs --data" "$bin" distill -m "$model" -o "$tmp/x.safetensors" ;;
  eval)
    "$bin" init-indexers -m "$model" -o "$tmp/idx.safetensors" --heads 2 --head-dim 32 --topk 16 -s 1 2>/dev/null ||
      fail "init-indexers failed"
    head -c 6000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    full=$(printf 'F%.0s' $(seq 30))
    echo "{\"patterns\": {\"1/2\": \"$(printf 'FS%.0s' $(seq 15))\", \"1/1\": \"$full\"}}" > "$tmp/search.json"
    "$bin" eval -m "$model" -t 1 --config base=dense --config q="$tmp/idx.safetensors@freq=4" \
      -f "$tmp/t.txt" --ctx 64,128 --max-tokens 256 --passkey-lengths 100,130 --passkey-depths 0,100 \
      --passkey-trials 2 --recall-ctx 64 --recall-windows 1 --json "$tmp/eval.json" >"$tmp/out" 2>"$tmp/err" ||
      fail "eval failed: $(cat "$tmp/err")"
    grep -q "tok/s, ETA" "$tmp/err" || fail "no progress lines: $(cat "$tmp/err")"
    for h in "## Held-out perplexity" "## Passkey retrieval" "### Passkey, q:" "## Per-layer attention recall"; do
      grep -q "$h" "$tmp/out" || fail "markdown lacks '$h': $(cat "$tmp/out")"
    done
    # Recall only (cheap): the file's own pattern and a searched one.
    "$bin" eval -m "$model" -t 1 --sections recall --config dsa="$tmp/idx.safetensors" \
      --config s="$tmp/idx.safetensors@search=$tmp/search.json:1/2" -f "$tmp/t.txt" --recall-ctx 64 \
      --recall-windows 1 --json "$tmp/recall.json" >/dev/null 2>"$tmp/err" || fail "eval recall failed: $(cat "$tmp/err")"
    python3 - "$tmp/eval.json" "$tmp/recall.json" <<'PY' || exit 1
import json, sys
r = json.load(open(sys.argv[1]))
c = {x["name"]: x for x in r["configs"]}
assert list(c) == ["base", "q"], list(c)
assert c["q"]["pattern"] == "FSSS" * 7 + "FS" and c["q"]["topk"] == 16 and "pattern" not in c["base"], c["q"]
for x in c.values():
    assert [p["ctx"] for p in x["perplexity"]] == [64, 128], x["perplexity"]
    assert all(p["tokens"] == 256 and 1 < p["ppl"] < 1e4 and p["past"] == 16 for p in x["perplexity"]), x["perplexity"]
    cells = x["passkey"]["cells"]
    assert [(k["length"], k["depth"]) for k in cells] == [(100, 0), (100, 1), (130, 0), (130, 1)], cells
    assert all(k["trials"] == 2 and 0 <= k["accuracy"] <= 1 and k["mean_nll"] > 0 and k["prompt_tokens"] <= k["length"]
               for k in cells), cells
# The same seed gives the same prompts to every configuration.
assert [k["prompt_tokens"] for k in c["base"]["passkey"]["cells"]] == [k["prompt_tokens"] for k in c["q"]["passkey"]["cells"]]
assert "recall" not in c["base"] and len(c["q"]["recall"]["layers"]) == 30
assert [l["source"] for l in c["q"]["recall"]["layers"]][:6] == [0, 0, 0, 0, 4, 4]
r = json.load(open(sys.argv[2]))
c = {x["name"]: x for x in r["configs"]}
assert c["dsa"]["n_full"] == 30 and c["s"]["pattern"] == "FS" * 15 and "perplexity" not in c["s"], c["s"]
assert all(0 <= l["recall"] <= 1 for l in c["dsa"]["recall"]["layers"])
assert [l["source"] for l in c["s"]["recall"]["layers"]][:4] == [0, 0, 2, 2]
PY
    expect_error "exceeds the model's trained context" "$bin" eval -m "$model" --config base=dense -f "$tmp/t.txt" --ctx 10000
    expect_error "exceeds the model's trained context" "$bin" eval -m "$model" --config base=dense --sections passkey \
      --passkey-lengths 1024,9000
    expect_error "expected NAME=SPEC" "$bin" eval -m "$model" --config dense -f "$tmp/t.txt"
    expect_error "has no pattern '1/8' (it has: 1/1, 1/2)" "$bin" eval -m "$model" -f "$tmp/t.txt" \
      --config "s=$tmp/idx.safetensors@search=$tmp/search.json:1/8"
    expect_error "need held-out text" "$bin" eval -m "$model" --config base=dense ;;
  overlap)
    "$bin" init-indexers -m "$model" -o "$tmp/idx.safetensors" --heads 2 --head-dim 32 --topk 16 -s 1 2>/dev/null ||
      fail "init-indexers failed"
    head -c 3000 "$src/tests/data/reference_text.txt" > "$tmp/t.txt"
    "$bin" overlap -m "$model" -t 1 --indexers "$tmp/idx.safetensors" -f "$tmp/t.txt" --ctx 128 --pattern freq=4 \
      --json "$tmp/o.json" --svg "$tmp/o.svg" >"$tmp/out" 2>"$tmp/err" || fail "overlap failed: $(cat "$tmp/err")"
    grep -q "mean Jaccard over 112 query positions (>= 16)" "$tmp/out" || fail "no summary: $(cat "$tmp/out")"
    python3 - "$tmp/o.json" "$tmp/o.svg" <<'PY' || exit 1
import json, sys, xml.etree.ElementTree as ET
r = json.load(open(sys.argv[1]))
m = r["jaccard"]
assert r["n_layers"] == 30 and len(m) == 30 and all(len(row) == 30 for row in m)
assert r["min_position"] == 16 and r["rows"] == 112 and r["pattern"] == "FSSS" * 7 + "FS", r["pattern"]
assert all(m[i][i] == 1 and all(m[i][j] == m[j][i] and 0 <= m[i][j] <= 1 for j in range(30)) for i in range(30))
# Random indexers of different layers choose differently.
assert r["mean_offdiagonal"] < 0.95, r["mean_offdiagonal"]
root = ET.parse(sys.argv[2]).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg"
assert len(root.findall(f"{ns}rect/{ns}title")) == 900
assert sum(1 for e in root.iter(ns + "rect") if e.get("fill") == "#d62728") == 2 * 8 + 1  # F layers marked
PY
    expect_error "exceeds the model's trained context" "$bin" overlap -m "$model" --indexers "$tmp/idx.safetensors" \
      -f "$tmp/t.txt" --ctx 10000
    expect_error "neither F nor S" "$bin" overlap -m "$model" --indexers "$tmp/idx.safetensors" -f "$tmp/t.txt" \
      --pattern FSX ;;
  search)
    mkdir -p "$tmp/calib"
    head -c 4000 "$src/tests/data/reference_text.txt" > "$tmp/calib/a.txt"
    allf=$src/models/indexers/smollm2-h8d64-allF.safetensors
    # Top-k 16 of 64-token windows, so sparse attention drops keys and the flips matter.
    s=(search -m "$model" --indexers "$allf" -f "$tmp/calib" --ctx 64 --topk 16 -t 1)
    "$bin" "${s[@]}" --windows 1 --keep 28 --json "$tmp/s.json" >"$tmp/out" 2>"$tmp/err" || fail "search failed: $(cat "$tmp/err")"
    grep -q "layer-evals, [0-9.]*/s, ETA" "$tmp/err" || fail "no progress lines: $(cat "$tmp/err")"
    grep -q "^cost: 57 candidates" "$tmp/out" || fail "no cost report: $(cat "$tmp/out")"
    python3 - "$tmp/s.json" <<'PY' || exit 1
import json, math, sys
r = json.load(open(sys.argv[1]))
t = r["trajectory"]
assert [s["step"] for s in t] == [1, 2] and [s["n_full"] for s in t] == [29, 28], t
assert all(s["pattern"][0] == "F" and s["pattern"][s["layer"]] == "S" for s in t), t
assert all(a == "F" or b == "S" for a, b in zip(t[0]["pattern"], t[1]["pattern"])), "not nested"
# The flip committed is the best candidate (ties: lower layer), and its loss the candidate's.
for s in t:
    c = {int(k): v for k, v in s["candidates"].items()}
    assert s["layer"] == min(c, key=lambda l: (c[l], l)) and s["loss"] == c[s["layer"]], s
assert len(t[0]["candidates"]) == 29 and len(t[1]["candidates"]) == 28
assert r["patterns"] == {"28": t[1]["pattern"]}, r["patterns"]
assert all(math.isfinite(x) and 1 < x < 8 for x in (r["dense_loss"], r["all_f_loss"])), r
c = r["cost"]
assert c["candidates"] == 57 and c["naive_passes"] == 58 and c["naive_layer_evals"] == 58 * 30, c
assert 0 < c["layer_evals"] < c["naive_layer_evals"] and c["refresh_mismatches"] == 0, c
assert r["config"]["topk"] == 16 and r["config"]["keep"] == 28, r["config"]
PY
    expect_error "outside \[1, 30\]" "$bin" "${s[@]}" --keep 31
    expect_error "expected a fraction 1/D" "$bin" "${s[@]}" --keep 1/0
    expect_error "do not apply" "$bin" "${s[@]}" --index-freq 4
    expect_error "has no indexer for it" "$bin" "${s[@]/$allf/$src/models/indexers/smollm2-h8d64-half.safetensors}"
    expect_error "not supported" "$bin" "${s[@]}" --lazy --blocks 2
    expect_error "gives 14 windows" "$bin" "${s[@]}" --windows 99 ;;
  pattern)
    # Exports, read back by Python restatements of each engine's source (not our C++ reader):
    # applied onto a GLM-5.2-style checkpoint config, every engine gives the exported layers.
    paper=FSFSFSSSSFSSSFSSFFSSFSSFSSSSFSSSFSSSSFSSSSSSSSS
    "$bin" pattern export freq=4,offset=3 --n-layers 78 --json >"$tmp/glm.json" || fail "export freq=4 failed"
    "$bin" pattern export $paper --for all --json >"$tmp/paper.json" || fail "export of the paper's pattern failed"
    python3 - "$tmp/glm.json" "$tmp/paper.json" <<'PY' || exit 1
import json, sys
def vllm(c, l):  # deepseek_v2.py DeepseekV2MLAAttention: True = shared
    p = c.get("index_topk_pattern")
    if p is None:
        return max(l - c.get("index_skip_topk_offset", 2) + 1, 0) % c.get("index_topk_freq", 1) != 0
    return l < len(p) and p[l] == "S"
def trtllm(c, l):  # llm_args.py DeepSeekSparseAttentionConfig._is_full_indexer_layer
    p = c.get("index_topk_pattern")
    if p is not None:
        return l < len(p) and str(p[l]).upper() == "S"
    f = max(c.get("index_topk_freq", 1) or 1, 1)
    return l != 0 and max(l - c.get("index_skip_topk_offset", 2) + 1, 0) % f != 0
def sglang(c, l):  # dsa_layer_skips_topk
    for key in ("indexer_types", "index_topk_pattern"):
        v = c.get(key)
        if v is not None and l < len(v):
            return str(v[l]).strip().lower() in ("s", "shared", "skip")
    f = int(c.get("index_topk_freq", 1) or 1)
    if f <= 1:
        return False
    o = c.get("index_skip_topk_offset")
    return max(l - (o if o is not None else 2) + 1, 0) % f != 0
def hf(c, l):  # GlmMoeDsaConfig.__post_init__, then indexer_types[l] == "shared"
    t = c.get("indexer_types")
    if t is None:
        p = c.get("index_topk_pattern")
        if p is not None:
            t = [{"F": "full", "S": "shared"}[x] for x in p] if isinstance(p, str) else list(p)
        else:
            f, o = max(c.get("index_topk_freq", 1), 1), c.get("index_skip_topk_offset", 2)
            t = ["full" if max(i - o + 1, 0) % f == 0 else "shared" for i in range(c["num_hidden_layers"])]
    return t[l] == "shared"
rules = {"vllm": vllm, "sglang": sglang, "trtllm": trtllm, "hf": hf}
for path in sys.argv[1:]:
    r = json.load(open(path))
    n, want = r["n_layers"], r["pattern"]
    assert [x["engine"] for x in r["exports"]] == ["vllm", "sglang", "trtllm", "hf"], r["exports"]
    # GLM-5.2's checkpoint as transformers leaves it: indexer_types filled from freq 4 / offset 3.
    glm = ["full" if max(i - 2, 0) % 4 == 0 else "shared" for i in range(n)]
    base = {"num_hidden_layers": n, "index_topk_freq": 4, "index_skip_topk_offset": 3, "indexer_types": glm,
            "index_topk_pattern": "F" * n}
    for x in r["exports"]:
        c = dict(base, **x["fields"])
        got = "".join("S" if rules[x["engine"]](c, l) else "F" for l in range(n))
        assert got == want, (path, x["engine"], got, want)
        if x["engine"] in ("vllm", "sglang"):
            assert x["text"].endswith("'" + json.dumps(x["fields"], separators=(",", ":")) + "'"), x["text"]
        else:
            assert json.loads(x["text"]) == x["fields"], x["text"]
    if n == 78:
        assert want.count("F") == 21 and all(x["schedule"] == {"index_topk_freq": 4, "index_skip_topk_offset": 3}
                                             for x in r["exports"]), r
    else:
        assert all(x["schedule"] is None for x in r["exports"]), r
PY
    # HF transformers loads the HF fields, where it is installed (CI has it not).
    if python3 -c "import transformers; transformers.GlmMoeDsaConfig" 2>/dev/null; then
      python3 - "$tmp/paper.json" <<'PY' || exit 1
import json, sys, transformers
r = json.load(open(sys.argv[1]))
hf = [x for x in r["exports"] if x["engine"] == "hf"][0]["fields"]
c = transformers.GlmMoeDsaConfig(num_hidden_layers=r["n_layers"], **hf)
assert "".join("F" if t == "full" else "S" for t in c.indexer_types) == r["pattern"], c.indexer_types
print("HF transformers", transformers.__version__, "loads the hf export")
PY
    fi
    # The search grammar, the text form, and --for one engine.
    echo '{"patterns": {"1/2": "FSFF", "1/4": "FSSS"}}' >"$tmp/s.json"
    out=$("$bin" pattern export "search=$tmp/s.json:1/4" --for sglang) || fail "export search= failed"
    echo "$out" | grep -q -- "--json-model-override-args '{\"index_topk_freq\":4,\"index_skip_topk_offset\":1," ||
      fail "sglang export: $out"
    # show: a checkpoint whose list and schedule disagree; the engines reading each differ.
    mkdir -p "$tmp/ckpt"
    python3 -c "import json; json.dump({'num_hidden_layers': 8, 'index_topk_freq': 4, 'index_skip_topk_offset': 1,
        'indexer_types': ['full', 'full'] + ['shared'] * 6}, open('$tmp/ckpt/config.json', 'w'))"
    "$bin" pattern show -m "$tmp/ckpt" --json >"$tmp/show.json" || fail "pattern show failed"
    python3 - "$tmp/show.json" <<'PY' || exit 1
import json, sys
r = json.load(open(sys.argv[1]))
got = {x["rule"]: x["pattern"] for x in r["rules"]}
assert got == {"vllm": "FSSSFSSS", "sglang": "FFSSSSSS", "trtllm": "FSSSFSSS", "hf": "FFSSSSSS",
               "thudm": "FFSSSFSS"}, got
assert r["agree"] is False and r["n_layers"] == 8, r
ign = {x["rule"]: x["ignored"] for x in r["rules"]}
assert ign["vllm"] == ["indexer_types"] and ign["thudm"] == ["indexer_types", "index_skip_topk_offset"], ign
PY
    "$bin" pattern show -m "$tmp/ckpt" --rule hf | grep -q "FFSSSSSS" || fail "show --rule hf"
    "$bin" pattern show -m "$tmp/ckpt" | grep -q "DISAGREE" || fail "show does not say the rules disagree"
    # search --export prints each pattern it finds for the engine.
    allf=$src/models/indexers/smollm2-h8d64-allF.safetensors
    head -c 3000 "$src/tests/data/reference_text.txt" >"$tmp/c.txt"
    "$bin" search -m "$model" --indexers "$allf" -f "$tmp/c.txt" --ctx 32 --topk 8 --windows 1 --keep 29 -q -t 2 \
      --export vllm >"$tmp/out" 2>"$tmp/err" || fail "search --export failed: $(cat "$tmp/err")"
    grep -q "^29: vLLM: vllm serve MODEL_DIR" "$tmp/out" && grep -q -- "--hf-overrides '{\"index_topk_" "$tmp/out" ||
      fail "search --export printed no vLLM form: $(cat "$tmp/out")"
    expect_error "unknown serving engine 'tgi'" "$bin" search -m "$model" --indexers "$allf" -f "$tmp/c.txt" \
      --export tgi
    # Bad input.
    expect_error "unknown serving engine 'tgi'" "$bin" pattern export FSSF --for tgi
    expect_error "give --n-layers N" "$bin" pattern export freq=4
    expect_error "neither F nor S" "$bin" pattern export FXSF
    expect_error "has 4 layers but the model has 5" "$bin" pattern export FSSF --n-layers 5
    expect_error "first layer must be F" "$bin" pattern export SFFF
    expect_error "has no pattern '1/8'" "$bin" pattern export "search=$tmp/s.json:1/8"
    expect_error "known rules are" "$bin" pattern show -m "$tmp/ckpt" --rule tgi
    expect_error "config.json" "$bin" pattern show -m "$tmp/none" ;;
  table1)
    # The Table 1 driver on a random-weight copy of a tiny checkpoint's config (CPU): every row,
    # the indexer cache of S layers left out, the report forms; and its errors.
    cfg=$src/tests/data/hf/glm_moe_dsa-tiny/config.json
    "$bin" table1 --random-weights "$cfg" --lengths 24,40 --configs dsa,1/2,half=FSFS --decode-steps 3 --chunk 16 \
      --json "$tmp/t1.json" --md "$tmp/t1.md" --prefill-svg "$tmp/p.svg" --decode-svg "$tmp/d.svg" >"$tmp/out" \
      2>"$tmp/err" || fail "table1 failed: $(cat "$tmp/err")"
    grep -q "| 40 | half |" "$tmp/out" || fail "table1's table lacks the 40-token half row: $(cat "$tmp/out")"
    grep -q "<svg" "$tmp/p.svg" && grep -q "<svg" "$tmp/d.svg" || fail "table1 wrote no SVG"
    python3 - "$tmp/t1.json" <<'PY' || exit 1
import json, sys
r = json.load(open(sys.argv[1]))
rows = r["rows"]
assert len(rows) == 6, rows
assert r["weights"].startswith("random"), r
for row in rows:
    assert row["finite"] and row["prefill_s"] > 0 and row["decode_tok_s"] > 0, row
    # the phase-timed decode step's parts lie inside it
    assert row["decode_split_ms"] > 0, row
    assert 0 < row["decode_indexer_ms"] + row["decode_attention_ms"] <= row["decode_split_ms"], row
by = {(x["context"], x["config"]): x for x in rows}
assert by[(40, "1/2")]["pattern"] == by[(40, "half")]["pattern"] == "FSFS"
assert by[(40, "1/2")]["index_cache_bytes"] * 2 == by[(40, "DSA")]["index_cache_bytes"]
PY
    # The greedy search on the same random weights, random-id calibration windows (its cost
    # measurement needs no text): a 1/2 pattern whose first layer is F, and no -f needed.
    "$bin" search --random-weights "$cfg" --random-tokens --ctx 32 --windows 2 --keep 2 --json "$tmp/s.json" \
      >"$tmp/sout" 2>"$tmp/serr" || fail "search --random-tokens failed: $(cat "$tmp/serr")"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r.keys())" "$tmp/s.json" >/dev/null ||
      fail "search --random-tokens wrote no JSON"
    grep -q "random" "$tmp/s.json" || fail "search JSON does not say its windows were random ids"
    expect_error "preset" "$bin" table1 --random-weights no-such-preset --lengths 10
    expect_error "not both" "$bin" table1 -m "$model" --random-weights "$cfg"
    expect_error "exceeds the model's limit" "$bin" table1 --random-weights "$cfg" --lengths 100000
    expect_error "positive length" "$bin" table1 --random-weights "$cfg" --lengths 10,x
    expect_error "expected dsa" "$bin" table1 --random-weights "$cfg" --lengths 10 --configs SFSF
    expect_error "GPU path" "$bin" table1 --random-weights "$cfg" --lengths 10 --indexer-fp8 ;;
  *) fail "unknown case $case" ;;
esac
echo "ok: $case"
