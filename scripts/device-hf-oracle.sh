#!/usr/bin/env bash
# The tiny random HF checkpoints of the DSA family and HF transformers' reference outputs, in ONE
# call of the device tool (its python3 has torch and transformers; CI never runs this):
# scripts/hf_oracle.py writes tests/data/hf/<name>/ into a scratch folder, and this packs it as
# $OUT/hf.tar.gz with the log beside it ($OUT/oracle.log). Back here:
#   tar -C tests/data -xzf <files_at>/hf.tar.gz        (README.md there is written by hand)
# The tokenizers are copied from tests/data/tokenizers/{deepseek-v3-tiny,glm-tiny}/ when present.
#
#   device run:  scripts/device-hf-oracle.sh [--only NAME,...]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-./device-out}"
mkdir -p "$out"
work="$(mktemp -d)"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tee "$out/oracle.log"
PYTHONUNBUFFERED=1 python3 scripts/hf_oracle.py --out "$work/hf" "$@" 2>&1 | tee -a "$out/oracle.log"
status=${PIPESTATUS[0]}
rm -f "$work/hf/oracle.log"
tar -C "$work" -czf "$out/hf.tar.gz" hf
du -sb "$work"/hf/* "$work/hf" | tee -a "$out/oracle.log"
rm -rf "$work"
exit "$status"
