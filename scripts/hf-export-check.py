#!/usr/bin/env python3
"""HF transformers loads what `indexcache pattern export --for hf` writes: for each pattern, the
export is merged into a copy of tests/data/hf/glm_moe_dsa-tiny/config.json, the model is built by
transformers' own GlmMoeDsaForCausalLM, and its per-layer sharing (config.indexer_types and each
attention layer's skip_topk) must be the pattern; a forward then runs. Needs torch and
transformers (the device has them; `pip install torch==2.11.0 transformers==5.17.0` here).
Usage: scripts/hf-export-check.py INDEXCACHE_BINARY [PATTERN ...]"""
import json, os, shutil, subprocess, sys, tempfile

import torch
import transformers

binary = sys.argv[1]
patterns = sys.argv[2:] or ["FSSF", "FFSS", "FSFS", "FSSS", "FFFF"]
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "hf", "glm_moe_dsa-tiny")
ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]])
print("torch", torch.__version__, "transformers", transformers.__version__)
failed = 0
logits = {}
for p in patterns:
    out = json.loads(subprocess.check_output([binary, "pattern", "export", p, "--for", "hf", "--json"]))
    fields = out["exports"][0]["fields"]
    d = tempfile.mkdtemp()
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), d)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    c.pop("indexer_types", None)  # the checkpoint's own; the export must stand on its own
    c.update(fields)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f)
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    got = "".join("F" if t == "full" else "S" for t in m.config.indexer_types)
    layers = "".join("S" if l.self_attn.skip_topk else "F" for l in m.model.layers)
    with torch.no_grad():
        logits[p] = m(ids).logits
    ok = got == p == layers
    failed += not ok
    print(f"{p}: config.indexer_types {got}, layers {layers}, {type(m).__name__}: {'ok' if ok else 'MISMATCH'}")
    shutil.rmtree(d)
base = logits.get("F" * len(patterns[0]))
if base is not None:
    for p, l in logits.items():
        print(f"{p}: max |logits - all-F logits| {float((l - base).abs().max()):.4f}")
print(f"{len(patterns) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
