# Stage "attn" of scripts/device-dsa.sh: the sparse-attention kernels (GQA and MLA), by running the
# self-contained scripts/device-sparse-attention.sh against this script's build folder, so that one
# call of the device tool builds, checks and times every DSA kernel. Its seven logs are packed into
# one archive ($OUT/sparse-attention-logs.tar.gz: the tool brings back at most 8 files) and its
# summary table is appended to this script's summary.
DSA_TARGETS+=" sparse_attention_bench"
DSA_STAGES+=" attn"

stage_attn() {
  local sa_out=/tmp/sa_out rc
  rm -rf "$sa_out" && mkdir -p "$sa_out"
  local sa_mode=full; [ "$mode" = quick ] && sa_mode=quick
  OUT=$sa_out IC_DEVICE_BUILD=$build bash "$src/scripts/device-sparse-attention.sh" "$sa_mode" >/dev/null 2>&1
  rc=$?
  cat "$sa_out/sa_summary.txt" >>"$summary" 2>/dev/null
  tar czf "$OUT/sparse-attention-logs.tar.gz" -C "$sa_out" . 2>/dev/null
  note "attn (scripts/device-sparse-attention.sh $sa_mode): rc $rc"
  return $rc
}
