#!/usr/bin/env python3
"""The peer of `indexcache table1` (docs/TABLE1.md): HF transformers' own implementation of the
same architecture, random weights in bf16 on the GPU, timed the same way: prefill of one sequence
of each length, then decode steps with HF's cache, for DSA and IndexCache patterns (HF 5.x reads
`indexer_types` for glm_moe_dsa). A truncated model (--layers) keeps it within the lengths HF's
dense-masked indexer can hold. Device only (needs torch + CUDA); prints a JSON list of rows.

  python3 scripts/hf_table1_peer.py --preset glm47-flash-dsa --layers 4 --lengths 2048,8192 \
      --configs dsa,1/4 --decode-steps 8 --out hf.json
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch
import transformers


def pattern(spec, n):
    if spec == "dsa":
        return "F" * n
    if spec.startswith("1/"):
        f = int(spec[2:])
        return "".join("F" if l % f == 0 else "S" for l in range(n))
    return spec.split("=", 1)[1]


def load_config(preset, layers, pat):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "presets")
    with open(os.path.join(root, preset + ".json")) as f:
        c = json.load(f)
    c["num_hidden_layers"] = layers
    if "mlp_layer_types" in c:
        c["mlp_layer_types"] = c["mlp_layer_types"][:layers]
    c["indexer_types"] = ["full" if ch == "F" else "shared" for ch in pat]
    c.pop("num_nextn_predict_layers", None)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f)
        return transformers.AutoConfig.from_pretrained(d)


def sync():
    torch.cuda.synchronize()


def run(preset, layers, spec, lengths, steps, seed):
    cfg = load_config(preset, layers, pattern(spec, layers))
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    # Warm-up, untimed: the first forward pays for CUDA context, cuBLAS handles and kernel loads
    # (our driver warms up the same way before its rows).
    with torch.no_grad():
        w = torch.randint(0, cfg.vocab_size, (1, 258), device="cuda")
        out = model(w[:, :256], use_cache=True)
        model(w[:, 256:257], past_key_values=out.past_key_values, use_cache=True)
        sync()
    del out
    torch.cuda.empty_cache()
    rows = []
    for L in lengths:
        ids = torch.randint(0, cfg.vocab_size, (1, L + steps + 1), device="cuda")
        row = {"config": spec, "context": L, "layers": layers}
        try:
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                out = model(ids[:, :L], use_cache=True)
                sync()
                row["prefill_s"] = time.perf_counter() - t0
                past = out.past_key_values
                ms = []
                for i in range(steps + 1):
                    t0 = time.perf_counter()
                    out = model(ids[:, L + i : L + i + 1], past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    sync()
                    if i > 0:
                        ms.append((time.perf_counter() - t0) * 1000)
                ms.sort()
                row["decode_ms"] = ms[len(ms) // 2]
                row["finite"] = bool(torch.isfinite(out.logits).all())
        except torch.OutOfMemoryError as e:
            row["error"] = "out of memory: " + str(e).split("\n")[0]
        except Exception as e:  # what HF cannot run is a row with its reason
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        torch.cuda.empty_cache()
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    del model
    torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="glm47-flash-dsa")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lengths", default="2048,8192")
    ap.add_argument("--configs", default="dsa,1/4")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    for spec in a.configs.split(","):
        rows += run(a.preset, a.layers, spec, [int(x) for x in a.lengths.split(",")], a.decode_steps, a.seed)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(), "weights": "random bf16: timings only"}
    text = json.dumps({"meta": meta, "rows": rows}, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
