#!/usr/bin/env python3
"""HF transformers loads what `indexcache distill -m DIR -o OUT` writes: the folder OUT is built by
transformers' own class (AutoModelForCausalLM, float32), with no missing or unexpected weights;
its per-layer sharing (config.indexer_types and each attention layer's skip_topk, glm_moe_dsa)
is PATTERN; every F layer's indexer parameters in the HF module equal the tensors of
OUT/model-indexcache-indexers.safetensors bit for bit (as float32); and they differ from the
source folder's (the training changed them). A forward then runs.
Needs torch and transformers (torch 2.11 + transformers 5.17 on the CPU:
`python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch==2.11.0 --index-url
https://download.pytorch.org/whl/cpu transformers==5.17.0 safetensors`).
With PROMPT_IDS (a JSON list, `indexcache tokenize -m OUT --json`) and OURS (the JSON of
`indexcache generate -m OUT -p ... --json`), HF's greedy continuation of the prompt must be our tokens.
Usage: scripts/hf-distill-check.py OUT_DIR SOURCE_DIR PATTERN [PROMPT_IDS OURS]"""
import sys

import torch
import transformers
from safetensors.torch import load_file

out, src, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
print("torch", torch.__version__, "transformers", transformers.__version__)
m, info = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
m.eval()
problems = []
for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    if info.get(k):
        problems.append(f"{k}: {sorted(info[k])[:8]}")
print(f"{type(m).__name__}; loading info: " + ", ".join(f"{k} {len(v)}" for k, v in info.items() if hasattr(v, "__len__")))
layers = "".join("S" if getattr(l.self_attn, "skip_topk", False) else "F" for l in m.model.layers)
types = getattr(m.config, "indexer_types", None)
got = "".join("F" if t == "full" else "S" for t in types) if types else None
print(f"config.indexer_types {got}, layers {layers}, index_topk_pattern {getattr(m.config, 'index_topk_pattern', None)}")
if got is not None and got != pattern:
    problems.append(f"indexer_types {got} != {pattern}")
if layers != pattern and m.config.model_type == "glm_moe_dsa":
    problems.append(f"layers share as {layers}, not {pattern}")
trained = load_file(f"{out}/model-indexcache-indexers.safetensors")
sd = m.state_dict()
import json, os
with open(os.path.join(src, "model.safetensors.index.json")) if os.path.exists(os.path.join(src, "model.safetensors.index.json")) else open(os.devnull) as f:
    txt = f.read()
src_map = json.loads(txt)["weight_map"] if txt else None
def src_tensor(name):
    if src_map is None:
        t = load_file(os.path.join(src, "model.safetensors"))
        return t.get(name)
    if name not in src_map:
        return None
    return load_file(os.path.join(src, src_map[name]))[name]
same, changed = 0, 0
for name, t in sorted(trained.items()):
    if name not in sd:
        problems.append(f"{name} is not a parameter of the HF model")
        continue
    if torch.equal(sd[name], t.float()):
        same += 1
    else:
        problems.append(f"{name}: HF's parameter differs from the written tensor")
    s = src_tensor(name)
    if s is None or not torch.equal(s.float(), t.float()):
        changed += 1
print(f"{same} of {len(trained)} written indexer tensors are HF's parameters bit for bit; {changed} differ from the source")
ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]])
with torch.no_grad():
    logits = m(ids).logits
print(f"forward: logits {tuple(logits.shape)}, finite {bool(torch.isfinite(logits).all())}")
if not torch.isfinite(logits).all():
    problems.append("non-finite logits")
if len(sys.argv) > 5:
    ids, ours_json = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    ours = ours_json["tokens"]
    # `generate` adds the tokenizer's BOS where tokenizer_config.json says add_bos_token (DeepSeek's);
    # `tokenize` does not: then the prompt is one token longer than the ids.
    if ours_json["prompt_tokens"] == len(ids) + 1:
        ids = [m.config.bos_token_id] + ids
    assert ours_json["prompt_tokens"] == len(ids), (ours_json["prompt_tokens"], len(ids))
    prompt = torch.tensor([ids])
    with torch.no_grad():
        gen = m.generate(prompt, max_new_tokens=len(ours), do_sample=False)[0, prompt.shape[1]:].tolist()
    print(f"greedy {len(ours)} tokens: HF {gen}, ours {ours}: {'same' if gen == ours else 'DIFFERENT'}")
    if gen != ours:
        problems.append("HF's greedy tokens differ from ours")
for p in problems:
    print("PROBLEM:", p)
print("ok" if not problems else f"{len(problems)} problems")
sys.exit(1 if problems else 0)
