#!/usr/bin/env python3
"""Independent NumPy reference forward pass of a llama-architecture GGUF model
(SmolLM2-135M-Instruct Q4_1), written from the formulas.

It shares no code with the C++ engine: weights are read and dequantised with the
Python `gguf` package, text is tokenised with HF `tokenizers` built from the
GGUF's own vocabulary and merges, and the transformer is evaluated in float64
(or float32 with --dtype float32, for tolerance studies).

Output: a JSON file (see docs/REFERENCE.md) with, for a few prompts, the token
ids, the argmax of the logits at every position, log p(next token), the full
log-softmax at the last position, and a perplexity measurement on a text file.
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time

import numpy as np

import gguf
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEXT = os.path.join(HERE, "..", "tests", "data", "reference_text.txt")

CHAT_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n"
    "<|im_start|>assistant\n"
)

# GGML token types (llama.cpp enum llama_token_type).
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# GGUF reading
# --------------------------------------------------------------------------

def field_value(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class HParams:
    def __init__(self, reader):
        arch = field_value(reader, "general.architecture")
        if arch != "llama":
            raise SystemExit(f"unsupported architecture {arch!r} (expected 'llama')")
        g = lambda k, d=None: field_value(reader, f"llama.{k}", d)
        self.n_layer = int(g("block_count"))
        self.n_embd = int(g("embedding_length"))
        self.n_ff = int(g("feed_forward_length"))
        self.n_head = int(g("attention.head_count"))
        self.n_head_kv = int(g("attention.head_count_kv", self.n_head))
        self.n_ctx_train = int(g("context_length"))
        self.rope_base = float(g("rope.freq_base", 10000.0))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)

    def as_dict(self):
        return dict(self.__dict__)


def load_weights(reader, hp, dtype):
    """Dequantise every tensor to `dtype`. Returns {name: ndarray}.

    GGUF stores dims in ggml `ne` order (innermost/contiguous first). A weight
    with ne = [n_in, n_out] is an (n_out, n_in) row-major matrix; we check that
    the dequantised array has exactly the reversed shape, so y = x @ W.T.
    """
    w = {}
    for t in reader.tensors:
        ne = [int(x) for x in t.shape]
        a = dequantize(t.data, t.tensor_type)
        expect = tuple(reversed(ne))
        if tuple(a.shape) != expect:
            a = a.reshape(expect)
        w[t.name] = np.ascontiguousarray(a, dtype=dtype)
    # Sanity-check the shapes we rely on.
    E, F, H, Hkv, D = hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim
    assert w["token_embd.weight"].shape == (hp.n_vocab, E)
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        assert w[p + "attn_q.weight"].shape == (H * D, E)
        assert w[p + "attn_k.weight"].shape == (Hkv * D, E)
        assert w[p + "attn_v.weight"].shape == (Hkv * D, E)
        assert w[p + "attn_output.weight"].shape == (E, H * D)
        assert w[p + "ffn_gate.weight"].shape == (F, E)
        assert w[p + "ffn_up.weight"].shape == (F, E)
        assert w[p + "ffn_down.weight"].shape == (E, F)
        assert w[p + "attn_norm.weight"].shape == (E,)
        assert w[p + "ffn_norm.weight"].shape == (E,)
    assert w["output_norm.weight"].shape == (E,)
    if "output.weight" in w:
        raise SystemExit("model has an untied output.weight; this reference assumes tied embeddings")
    return w


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Tokenizer (byte-level BPE from the GGUF vocab + merges)
# --------------------------------------------------------------------------

def build_tokenizer(reader):
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    merges = field_value(reader, "tokenizer.ggml.merges")
    model = field_value(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise SystemExit(f"unsupported tokenizer model {model!r} (expected byte-level BPE 'gpt2')")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate token strings in vocab"
    merge_pairs = []
    for m in merges:
        a, b = m.split(" ", 1)
        merge_pairs.append((a, b))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        # 1) every digit becomes its own piece
        pre_tokenizers.Digits(individual_digits=True),
        # 2) GPT-2 regex split (use_regex=True) + bytes -> unicode mapping, no prefix space
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, ty in enumerate(types) if ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
    tk.add_special_tokens(special)
    for t in special:
        assert tk.token_to_id(t.content) == vocab[t.content]
    return tk


def encode(tk, text):
    return tk.encode(text, add_special_tokens=False).ids


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def quantize_q8_blocks(x):
    """Simulate llama.cpp-style activation quantisation: per block of 32 along
    the last axis, d = max|x|/127, q = round-half-away(x/d) in [-127,127],
    returns q*d (the value the integer dot product effectively uses)."""
    shp = x.shape
    assert shp[-1] % 32 == 0
    xb = x.reshape(-1, shp[-1] // 32, 32)
    amax = np.max(np.abs(xb), axis=-1, keepdims=True)
    d = amax / 127.0
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    v = xb * inv
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # roundf: half away from zero
    return (q * d).reshape(shp).astype(x.dtype, copy=False)


class Model:
    def __init__(self, path, dtype=np.float64, rope="norm", q8_act=False):
        self.path = path
        self.reader = gguf.GGUFReader(path)
        self.hp = HParams(self.reader)
        self.dtype = dtype
        self.rope_mode = rope
        self.q8_act = q8_act
        t0 = time.time()
        self.w = load_weights(self.reader, self.hp, dtype)
        log(f"loaded {len(self.w)} tensors in {time.time() - t0:.1f}s (dtype {np.dtype(dtype).name})")
        self.tok = build_tokenizer(self.reader)

    # y = x @ W^T, W is (out, in)
    def linear(self, x, name):
        if self.q8_act:
            x = quantize_q8_blocks(x)
        return x @ self.w[name].T

    def rms_norm(self, x, name):
        dt = self.dtype
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x * (dt(1.0) / np.sqrt(ms + dt(self.hp.eps))) * self.w[name]

    def rope_tables(self, n):
        hp = self.hp
        half = hp.n_rot // 2
        # theta_i = pos * base^(-2i/n_rot), i = 0..n_rot/2-1 (computed in float64)
        inv_freq = hp.rope_base ** (-np.arange(half, dtype=np.float64) * 2.0 / hp.n_rot)
        ang = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]
        return np.cos(ang).astype(self.dtype), np.sin(ang).astype(self.dtype)

    def apply_rope(self, x, cos, sin):
        """x: (n, heads, head_dim). cos/sin: (n, n_rot/2)."""
        hp = self.hp
        r = hp.n_rot
        c = cos[:, None, :]
        s = sin[:, None, :]
        out = x.copy()
        if self.rope_mode == "norm":
            # ggml rope mode 0 (GGUF llama convention): adjacent pairs (2i, 2i+1)
            x0 = x[..., 0:r:2]
            x1 = x[..., 1:r:2]
            out[..., 0:r:2] = x0 * c - x1 * s
            out[..., 1:r:2] = x0 * s + x1 * c
        elif self.rope_mode == "neox":
            # half-split pairs (i, i + r/2) (HF rotate_half convention)
            h = r // 2
            x0 = x[..., 0:h]
            x1 = x[..., h:r]
            out[..., 0:h] = x0 * c - x1 * s
            out[..., h:r] = x0 * s + x1 * c
        else:
            raise ValueError(self.rope_mode)
        return out

    def attention(self, q, k, v, qblock=512):
        """Causal GQA attention. q: (n, H, D), k/v: (n, Hkv, D) -> (n, H*D)."""
        hp = self.hp
        n = q.shape[0]
        H, Hkv, D = hp.n_head, hp.n_head_kv, hp.head_dim
        grp = H // Hkv
        scale = self.dtype(1.0 / math.sqrt(D))
        out = np.empty((n, H, D), dtype=self.dtype)
        for g in range(Hkv):
            # query heads g*grp .. g*grp+grp-1 share KV head g  (h // grp == g)
            qg = np.ascontiguousarray(q[:, g * grp:(g + 1) * grp, :].transpose(1, 0, 2))  # (grp, n, D)
            kg = k[:, g, :]  # (n, D)
            vg = v[:, g, :]
            for s0 in range(0, n, qblock):
                e0 = min(n, s0 + qblock)
                sc = (qg[:, s0:e0, :] @ kg[:e0].T) * scale  # (grp, e0-s0, e0)
                # causal mask: query at position p sees keys 0..p
                qpos = np.arange(s0, e0)[:, None]
                kpos = np.arange(e0)[None, :]
                sc = np.where(kpos <= qpos, sc, -np.inf)
                sc = sc - sc.max(axis=-1, keepdims=True)
                p = np.exp(sc)
                p /= p.sum(axis=-1, keepdims=True)
                out[s0:e0, g * grp:(g + 1) * grp, :] = (p @ vg[:e0]).transpose(1, 0, 2)
        return out.reshape(n, H * D)

    def hidden(self, ids):
        """Final normalised hidden states (n, n_embd) for a token sequence."""
        hp = self.hp
        n = len(ids)
        H, Hkv, D = hp.n_head, hp.n_head_kv, hp.head_dim
        x = self.w["token_embd.weight"][np.asarray(ids, dtype=np.int64)].copy()
        cos, sin = self.rope_tables(n)
        for i in range(hp.n_layer):
            p = f"blk.{i}."
            h = self.rms_norm(x, p + "attn_norm.weight")
            q = self.linear(h, p + "attn_q.weight").reshape(n, H, D)
            k = self.linear(h, p + "attn_k.weight").reshape(n, Hkv, D)
            v = self.linear(h, p + "attn_v.weight").reshape(n, Hkv, D)
            q = self.apply_rope(q, cos, sin)
            k = self.apply_rope(k, cos, sin)
            a = self.attention(q, k, v)
            x = x + self.linear(a, p + "attn_output.weight")
            h = self.rms_norm(x, p + "ffn_norm.weight")
            gate = self.linear(h, p + "ffn_gate.weight")
            up = self.linear(h, p + "ffn_up.weight")
            act = gate / (self.dtype(1.0) + np.exp(-gate)) * up  # silu(gate) * up
            x = x + self.linear(act, p + "ffn_down.weight")
        return self.rms_norm(x, "output_norm.weight")

    def score(self, ids, chunk=256, want_last=True):
        """Returns (top1[n], logprob_next[n-1], last_logprobs[n_vocab] or None).

        Logits are h @ token_embd^T (tied LM head). log-softmax is always
        evaluated in float64 from the logits of the chosen dtype."""
        n = len(ids)
        h = self.hidden(ids)
        top1 = np.empty(n, dtype=np.int64)
        lp_next = np.empty(max(n - 1, 0), dtype=np.float64)
        last = None
        for s0 in range(0, n, chunk):
            e0 = min(n, s0 + chunk)
            logits = self.linear(h[s0:e0], "token_embd.weight").astype(np.float64)
            top1[s0:e0] = np.argmax(logits, axis=-1)
            m = logits.max(axis=-1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
            for t in range(s0, min(e0, n - 1)):
                lp_next[t] = logits[t - s0, ids[t + 1]] - lse[t - s0]
            if want_last and e0 == n:
                last = logits[-1] - lse[-1]
        return top1, lp_next, last


# --------------------------------------------------------------------------
# Prompts / perplexity
# --------------------------------------------------------------------------

def paragraph_prompt(tk, text, target_tokens=300):
    """A ~target_tokens English passage from the reference text: consecutive
    prose paragraphs (blank-line separated; reST headings, directives and
    labels skipped) starting with the first prose paragraph, stopping at the
    first sentence end after target_tokens tokens."""
    paras = [p.strip("\n") for p in text.split("\n\n")]

    def is_prose(p):
        if not p.strip():
            return False
        first = p.lstrip().splitlines()[0]
        if first.startswith((".. ", "*", "=", "-", ">>>", "::")) or first.startswith(" "):
            return False
        lines = p.splitlines()
        if len(lines) >= 2 and set(lines[1].strip()) <= set("=-~*^"):
            return False
        return len(p) > 80

    out = []
    for p in paras:
        if not is_prose(p):
            continue
        out.append(p)
        s = "\n\n".join(out)
        if len(encode(tk, s)) >= target_tokens:
            break
    s = "\n\n".join(out)
    # trim to roughly target_tokens, ending on a sentence boundary
    ids = encode(tk, s)
    if len(ids) > target_tokens:
        cut = len(tk.decode(ids[:target_tokens]))
        m = re.compile(r"\.\s").search(s, cut)
        if m:
            s = s[:m.start() + 1]
    return s


def perplexity(model, ids_all, ctx, max_tokens):
    ids_all = ids_all[:max_tokens]
    windows = [ids_all[s:s + ctx] for s in range(0, len(ids_all), ctx)]
    windows = [w for w in windows if len(w) >= 2]
    scored_ids, nll = [], []
    for wi, w in enumerate(windows):
        t0 = time.time()
        _, lp, _ = model.score(w, want_last=False)
        scored_ids.extend(int(x) for x in w)
        nll.extend(float(-x) for x in lp)
        log(f"ppl window {wi + 1}/{len(windows)}: {len(w)} tokens, {time.time() - t0:.1f}s")
    nll_sum = math.fsum(nll)
    m = len(nll)
    return {
        "ctx": ctx,
        "n_scored": m,
        "nll_sum": nll_sum,
        "nll_mean": nll_sum / m,
        "ppl": math.exp(nll_sum / m),
        "ids": scored_ids,
        "nll": nll,
    }


def compare(ref, cur):
    """Statistics of cur vs ref (both in the JSON layout)."""
    res = {"prompts": []}
    all_last, all_next = [], []
    top1_changes = 0
    top1_total = 0
    for rp, cp in zip(ref["prompts"], cur["prompts"]):
        assert rp["ids"] == cp["ids"], "different tokenisation"
        dl = np.abs(np.array(rp["last_logprobs"]) - np.array(cp["last_logprobs"]))
        dn = np.abs(np.array(rp["logprob_next"]) - np.array(cp["logprob_next"]))
        ch = [t for t, (a, b) in enumerate(zip(rp["top1"], cp["top1"])) if a != b]
        top1_changes += len(ch)
        top1_total += len(rp["top1"])
        all_last.append(dl)
        all_next.append(dn)
        # top-1 margin of the reference where it changed (near-ties explain flips)
        res["prompts"].append({
            "n": len(rp["ids"]),
            "last_max": float(dl.max()), "last_mean": float(dl.mean()),
            "next_max": float(dn.max()) if dn.size else 0.0,
            "next_mean": float(dn.mean()) if dn.size else 0.0,
            "top1_changed_positions": ch,
        })
    al = np.concatenate(all_last)
    an = np.concatenate(all_next)
    res["last_logprobs_abs_delta_max"] = float(al.max())
    res["last_logprobs_abs_delta_mean"] = float(al.mean())
    res["logprob_next_abs_delta_max"] = float(an.max())
    res["logprob_next_abs_delta_mean"] = float(an.mean())
    res["top1_changed"] = top1_changes
    res["top1_total"] = top1_total
    if ref.get("perplexity") and cur.get("perplexity"):
        rp, cp = ref["perplexity"], cur["perplexity"]
        if rp["ids"] == cp["ids"]:
            d = np.abs(np.array(rp["nll"]) - np.array(cp["nll"]))
            res["ppl_ref"] = rp["ppl"]
            res["ppl_cur"] = cp["ppl"]
            res["ppl_rel_change"] = cp["ppl"] / rp["ppl"] - 1.0
            res["text_nll_abs_delta_max"] = float(d.max())
            res["text_nll_abs_delta_mean"] = float(d.mean())
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--text", default=DEFAULT_TEXT, help="text file for the perplexity measurement")
    ap.add_argument("--ctx", type=int, default=2048, help="perplexity window (tokens)")
    ap.add_argument("--max-tokens", type=int, default=2048, help="score at most this many tokens of --text")
    ap.add_argument("--prompt", action="append", default=None, help="prompt text (repeatable); control tokens such as <|im_start|> are parsed")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--rope", choices=["norm", "neox"], default="norm",
                    help="RoPE pairing: norm = adjacent pairs (ggml mode 0, correct for GGUF llama), neox = half split")
    ap.add_argument("--simulate-q8-activations", action="store_true",
                    help="quantise the input of every weight matmul (incl. LM head) to int8 per 32-block")
    ap.add_argument("--no-ppl", action="store_true", help="skip the perplexity measurement")
    ap.add_argument("--compare", metavar="REF_JSON", help="print deltas of this run against a reference JSON")
    args = ap.parse_args()

    t_start = time.time()
    dtype = np.float64 if args.dtype == "float64" else np.float32
    model = Model(args.model, dtype=dtype, rope=args.rope, q8_act=args.simulate_q8_activations)
    tk = model.tok

    # Tokeniser self-check against known ids.
    chk = encode(tk, "The capital of France is")
    if chk != [504, 3575, 282, 4649, 314]:
        raise SystemExit(f"tokeniser self-check failed: {chk}")

    with open(args.text, encoding="utf-8") as f:
        text = f.read()

    prompts = args.prompt
    if not prompts:
        prompts = ["The capital of France is", "def fibonacci(n):", CHAT_PROMPT, paragraph_prompt(tk, text)]

    out = {
        "model": args.model,
        "model_sha256": sha256_file(args.model),
        "dtype": args.dtype,
        "rope": args.rope,
        "simulate_q8_activations": bool(args.simulate_q8_activations),
        "hparams": model.hp.as_dict(),
        "prompts": [],
    }
    for p in prompts:
        ids = encode(tk, p)
        t0 = time.time()
        top1, lp, last = model.score(ids)
        log(f"prompt ({len(ids)} tokens) {time.time() - t0:.1f}s: {p[:40]!r}... top1[-1]={int(top1[-1])} "
            f"{tk.decode([int(top1[-1])])!r}")
        out["prompts"].append({
            "text": p,
            "ids": [int(x) for x in ids],
            "top1": [int(x) for x in top1],
            "logprob_next": [float(x) for x in lp],
            "last_logprobs": [round(float(x), 6) for x in last],
        })

    if not args.no_ppl:
        ids_text = encode(tk, text)
        t0 = time.time()
        ppl = perplexity(model, ids_text, args.ctx, args.max_tokens)
        ppl_out = {"text_file": args.text, "ctx": args.ctx, "n_tokens_text": len(ids_text)}
        ppl_out.update({k: v for k, v in ppl.items() if k != "ctx"})
        out["perplexity"] = ppl_out
        log(f"perplexity: {ppl['ppl']:.4f} over {ppl['n_scored']} tokens (text has {len(ids_text)} tokens), "
            f"{time.time() - t0:.1f}s")
    else:
        out["perplexity"] = None

    out["runtime_s"] = round(time.time() - t_start, 2)
    with open(args.out, "w") as f:
        json.dump(out, f)
    log(f"wrote {args.out} ({out['runtime_s']}s)")

    if args.compare:
        with open(args.compare) as f:
            ref = json.load(f)
        print(json.dumps(compare(ref, out), indent=1))


if __name__ == "__main__":
    main()
