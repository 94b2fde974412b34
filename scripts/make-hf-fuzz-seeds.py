#!/usr/bin/env python3
"""Write the seed corpus of fuzz/fuzz_hf_folder.cpp: small valid HF model folders, each packed
into one archive in the target's format (repeated: u16 LE name length, name, u32 LE size,
bytes).

    scripts/make-hf-fuzz-seeds.py [OUT_DIR]      (default fuzz/corpus/hf_folder)

The folders cover what the reader handles: bf16/f16/f32 weights in one model.safetensors, fp8
e4m3 weights with F32 block scales in a two-shard index (the scale in the other shard), ue8m0
scales stored as F32 and as F8_E8M0, stacked 3-D experts, and the IndexCache knobs of each
convention (indexer_types, index_topk_pattern, index_topk_freq + index_skip_topk_offset as
GLM-5.2 writes them). The safetensors files are written here from the format's definition,
independently of the C++ writer. Standard library only; the output is deterministic.
"""
import json
import math
import random
import struct
import sys
from pathlib import Path


def e4m3_value(b):
    """The value of an e4m3fn byte (None for its NaN)."""
    e, m = (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return None
    mag = m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
    return -mag if b & 0x80 else mag


E4M3 = [(b, v) for b in range(256) if (v := e4m3_value(b)) is not None]


def to_e4m3(x):
    return min(E4M3, key=lambda bv: abs(bv[1] - x))[0]


def bf16(x):
    return struct.pack("<I", struct.unpack("<I", struct.pack("<f", x))[0] + 0x8000)[2:]


DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E8M0": 1}


def safetensors(tensors):
    """tensors: {name: (dtype, shape, raw bytes)} -> file bytes (largest element size first,
    then by name, header padded with spaces to a multiple of 8)."""
    order = sorted(tensors, key=lambda n: (-DTYPE_SIZE[tensors[n][0]], n))
    header, data = {}, b""
    for name in order:
        dtype, shape, raw = tensors[name]
        assert len(raw) == math.prod(shape) * DTYPE_SIZE[dtype], name
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def plain(rng, dtype, shape):
    n = math.prod(shape)
    vals = [rng.gauss(0, 1) for _ in range(n)]
    if dtype == "F32":
        raw = struct.pack(f"<{n}f", *vals)
    elif dtype == "F16":
        raw = struct.pack(f"<{n}e", *vals)
    else:
        raw = b"".join(bf16(v) for v in vals)
    return (dtype, shape, raw)


def fp8(rng, shape, block, ue8m0=False, scale_dtype="F32"):
    """An fp8 weight and its <name>_scale_inv as DeepSeek makes them: scale = amax / 448 per
    block (ue8m0: the next power of two), q = e4m3(w / scale)."""
    *lead, rows, cols = shape
    br, bc = block
    sr, sc = -(-rows // br), -(-cols // bc)
    batch = math.prod(lead)
    w = [rng.gauss(0, 0.05) for _ in range(batch * rows * cols)]
    scale = [0.0] * (batch * sr * sc)
    for b in range(batch):
        for i in range(rows):
            for j in range(cols):
                k = (b * sr + i // br) * sc + j // bc
                scale[k] = max(scale[k], abs(w[(b * rows + i) * cols + j]))
    scale = [s / 448 for s in scale]
    if ue8m0:
        scale = [2.0 ** math.ceil(math.log2(s)) for s in scale]
    q = bytes(to_e4m3(w[(b * rows + i) * cols + j] / scale[(b * sr + i // br) * sc + j // bc])
              for b in range(batch) for i in range(rows) for j in range(cols))
    sshape = lead + [sr, sc]
    if scale_dtype == "F8_E8M0":
        sraw = bytes(int(math.log2(s)) + 127 for s in scale)
    else:
        sraw = struct.pack(f"<{len(scale)}f", *scale)
    return ("F8_E4M3", shape, q), (scale_dtype, sshape, sraw)


def config(**extra):
    c = {"architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32", "num_hidden_layers": 4}
    c.update(extra)
    return json.dumps(c, indent=1).encode()


FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [4, 8]}


def index(weight_map):
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1).encode()


def folders():
    rng = random.Random(20260312)
    yield "bf16_single", {
        "config.json": config(index_topk_freq=2, index_skip_topk_offset=1),
        "model.safetensors": safetensors({
            "model.embed_tokens.weight": plain(rng, "BF16", [4, 6]),
            "model.norm.weight": plain(rng, "F16", [6]),
            "lm_head.weight": plain(rng, "F32", [2, 3]),
        }),
        "tokenizer.json": b"{}",
    }

    w, s = fp8(rng, [8, 12], (4, 8))
    yield "fp8_two_shards", {
        "config.json": config(quantization_config=FP8, indexer_types=["full", "shared", "full", "shared"]),
        "model.safetensors.index.json": index({
            "model.layers.0.self_attn.q_a_proj.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.self_attn.q_a_proj.weight_scale_inv": "model-00002-of-00002.safetensors",
            "model.layers.0.input_layernorm.weight": "model-00002-of-00002.safetensors",
        }),
        "model-00001-of-00002.safetensors": safetensors({"model.layers.0.self_attn.q_a_proj.weight": w}),
        "model-00002-of-00002.safetensors": safetensors({
            "model.layers.0.self_attn.q_a_proj.weight_scale_inv": s,
            "model.layers.0.input_layernorm.weight": plain(rng, "BF16", [12]),
        }),
    }

    w1, s1 = fp8(rng, [3, 5], (128, 128), ue8m0=True)
    w2, s2 = fp8(rng, [2, 130], (128, 128), ue8m0=True, scale_dtype="F8_E8M0")
    q = dict(FP8, weight_block_size=[128, 128], scale_fmt="ue8m0")
    yield "fp8_ue8m0", {
        "config.json": config(quantization_config=q, index_topk_pattern="FSSF"),
        "model.safetensors": safetensors({
            "a.weight": w1, "a.weight_scale_inv": s1,
            "b.weight": w2, "b.weight_scale_inv": s2,
        }),
        "tokenizer_config.json": b"{}",
    }

    w, s = fp8(rng, [2, 5, 9], (4, 4))
    yield "fp8_experts", {
        "config.json": config(quantization_config=dict(FP8, weight_block_size=[4, 4]), index_topk_freq=2),
        "model.safetensors": safetensors({"model.layers.3.mlp.experts.down_proj": w,
                                          "model.layers.3.mlp.experts.down_proj_scale_inv": s}),
    }

    # GLM-5.2's knobs over 78 layers: freq 4, offset 3, and the matching indexer_types list.
    types = ["full" if max(l - 3 + 1, 0) % 4 == 0 else "shared" for l in range(78)]
    yield "glm52_knobs", {
        "config.json": config(architectures=["GlmMoeDsaForCausalLM"], model_type="glm_moe_dsa",
                              num_hidden_layers=78, index_topk_freq=4, index_skip_topk_offset=3,
                              index_topk_pattern=None, indexer_types=types),
        "model.safetensors": safetensors({"model.norm.weight": plain(rng, "BF16", [8])}),
    }


def pack(files):
    out = b""
    for name, data in files.items():
        n = name.encode()
        out += struct.pack("<H", len(n)) + n + struct.pack("<I", len(data)) + data
    return out


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fuzz/corpus/hf_folder")
    out.mkdir(parents=True, exist_ok=True)
    for name, files in folders():
        blob = pack(files)
        (out / f"{name}.bin").write_bytes(blob)
        print(f"{out / name}.bin: {len(blob)} bytes, {len(files)} files")


if __name__ == "__main__":
    main()
