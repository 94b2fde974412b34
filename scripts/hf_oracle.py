#!/usr/bin/env python3
"""Tiny random HF checkpoints of the DSA family and HF transformers' reference outputs.

Runs on the device machine (torch + transformers there; CI never runs it, CI only reads what it
wrote): scripts/device-hf-oracle.sh is the one command that runs it and packs the result. For each
checkpoint it builds the model with HF's own class from a small config in the real layout, fills
every parameter with bf16-representable random values (norm weights and biases included, the
router's e_score_correction_bias too: HF initialises it to zero), writes the folder
(config.json, shards in DeepSeek's per-expert layout, generation_config.json) and records HF's
float32 eager forward for fixed prompts:

  reference.json          prompts, per layer: indexer top-k (raw, as HF returns it) and the
                          effective selection (the causal part), MoE routing, hidden-state L2
                          norms; prefill-then-decode, IndexCache pattern runs, f64 cross-check,
                          reload checks; names of the tensors in reference.safetensors
  reference.safetensors   F32 logits, raw indexer scores, layer-0 intermediates (exact values)

Checkpoints: deepseek_v32-tiny (YaRN, n_group 4), deepseek_v32-fp8-tiny (the same weights stored
as fp8 e4m3 with 128x128 block scales, as DeepSeek ships V3.2; its reference is HF's forward with
the dequantised weights), glm_moe_dsa-tiny (all indexers full, plus a pattern run), glm_moe_dsa-
shared-tiny (index_topk_freq/index_skip_topk_offset in config.json, shared layers without indexer
tensors), glm4_moe_lite-tiny (dense MLA, q_lora_rank null, no indexer).

    python3 scripts/hf_oracle.py --out DIR [--only NAME,...]
"""
import argparse
import copy
import datetime
import json
import math
import os
import re
import shutil
import sys
import traceback

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

# Token ids of the fixed prompts; the long one (30 > 3 * index_topk) repeats a 10-token chunk so
# that the indexer has something to find.
_g = torch.Generator().manual_seed(1234)
_chunk = torch.randint(3, 1024, (10,), generator=_g).tolist()
PROMPTS = [
    [0] + torch.randint(3, 1024, (4,), generator=_g).tolist(),
    [0] + torch.randint(3, 1024, (12,), generator=_g).tolist(),
    [0] + torch.randint(3, 1024, (9,), generator=_g).tolist() + _chunk + _chunk,
]
DECODE_PROMPT = 2  # prefill len-3 tokens, then 3 single-token steps
DEBUG_PROMPT = 1  # layer-0 intermediates of this prompt
DECODE_STEPS = 3
FP8_MAX = 448.0
BLOCK = 128

LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def g8(x):
    """A float for JSON with 8 significant digits (f32 needs 9 to round-trip; these are checks)."""
    return float(f"{float(x):.8g}")


# ----------------------------------------------------------------------------------------------
# configs


def rope_yarn():
    # mscale != mscale_all_dim on purpose: then both the cos/sin attention_factor and the
    # softmax-scale mscale^2 are != 1, so a reimplementation must get both right.
    return {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 0.8,
    }


COMMON = dict(
    vocab_size=1024,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_shared_experts=1,
    n_routed_experts=8,
    num_experts_per_tok=2,
    norm_topk_prob=True,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=1,
    tie_word_embeddings=False,
    first_k_dense_replace=1,
)


def config_v32():
    return transformers.DeepseekV32Config(
        **COMMON,
        intermediate_size=192,  # 128 + 64: a partial 128-block in the fp8 variant
        moe_intermediate_size=32,
        routed_scaling_factor=2.5,
        kv_lora_rank=32,
        q_lora_rank=48,
        qk_rope_head_dim=16,
        qk_nope_head_dim=32,
        v_head_dim=32,
        n_group=4,
        topk_group=2,
        rms_norm_eps=1e-6,
        rope_parameters=rope_yarn(),
        index_topk=8,
        index_head_dim=32,
        index_n_heads=8,
    )


def config_glm(**extra):
    return transformers.GlmMoeDsaConfig(
        **COMMON,
        intermediate_size=128,
        moe_intermediate_size=32,
        routed_scaling_factor=2.5,
        kv_lora_rank=32,
        q_lora_rank=32,
        qk_rope_head_dim=8,
        qk_nope_head_dim=24,
        v_head_dim=16,
        n_group=1,
        topk_group=1,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        index_topk=8,
        index_head_dim=16,
        index_n_heads=8,
        **extra,
    )


def config_lite():
    kw = dict(COMMON)
    kw["num_hidden_layers"] = 3
    kw.pop("first_k_dense_replace")
    try:
        return transformers.Glm4MoeLiteConfig(
            **kw,
            first_k_dense_replace=1,  # not a field of the class: kept as the real config.json has it
            intermediate_size=128,
            moe_intermediate_size=32,
            routed_scaling_factor=1.8,
            kv_lora_rank=32,
            q_lora_rank=None,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            n_group=2,
            topk_group=1,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rope_interleave=True,
        )
    except Exception as e:  # noqa: BLE001 - strict config may refuse the extra key
        log("glm4_moe_lite: config refused first_k_dense_replace:", e)
        return transformers.Glm4MoeLiteConfig(
            **kw,
            intermediate_size=128,
            moe_intermediate_size=32,
            routed_scaling_factor=1.8,
            kv_lora_rank=32,
            q_lora_rank=None,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            n_group=2,
            topk_group=1,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rope_interleave=True,
        )


# ----------------------------------------------------------------------------------------------
# model building and random bf16-representable parameters


def build(cls, config):
    config._attn_implementation = "eager"
    # eager experts: HF's plain per-expert loop (the default grouped_mm has no float64 kernel)
    model = cls._from_config(
        config, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model


def randomize(model, seed):
    """Every parameter and the router bias: random, bf16-representable; norms around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                if name.endswith("bias"):
                    v = 0.1 * torch.randn(p.shape, generator=g)
                else:  # RMSNorm / LayerNorm weights
                    v = 1.0 + 0.25 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g)
            else:
                fan_in = p.shape[-1]
                v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
                # Row and column gains, so that the 128x128 blocks of the fp8 variant get clearly
                # different scales (a wrong block index then shows in the logits).
                v = v * torch.exp(0.4 * torch.randn(p.shape[-2], 1, generator=g))
                v = v * torch.exp(0.4 * torch.randn(p.shape[-1], generator=g))
                if "mlp.gate.weight" in name:
                    v = v * 2.0  # a router with decisive scores
            p.copy_(bf16(v))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(bf16(0.1 * torch.randn(b.shape, generator=g)))
    for name, p in model.named_parameters():
        assert torch.equal(p, bf16(p)), name


# ----------------------------------------------------------------------------------------------
# DeepSeek's on-disk layout: one tensor per expert projection

_FUSED_GU = re.compile(r"^(.*\.mlp\.experts)\.gate_up_proj$")
_FUSED_D = re.compile(r"^(.*\.mlp\.experts)\.down_proj$")


def to_ds_layout(sd):
    out = {}
    for k, v in sd.items():
        m = _FUSED_GU.match(k)
        if m:
            inter = v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{m.group(1)}.{e}.gate_proj.weight"] = v[e, :inter].contiguous()
                out[f"{m.group(1)}.{e}.up_proj.weight"] = v[e, inter:].contiguous()
            continue
        m = _FUSED_D.match(k)
        if m:
            for e in range(v.shape[0]):
                out[f"{m.group(1)}.{e}.down_proj.weight"] = v[e].contiguous()
            continue
        out[k] = v.contiguous()
    return out


def from_ds_layout(sd):
    out, experts = {}, {}
    pat = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
    for k, v in sd.items():
        m = pat.match(k)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = v
        else:
            out[k] = v
    for prefix, es in experts.items():
        n = len(es)
        out[f"{prefix}.gate_up_proj"] = torch.stack(
            [torch.cat([es[e]["gate_proj"], es[e]["up_proj"]], 0) for e in range(n)]
        )
        out[f"{prefix}.down_proj"] = torch.stack([es[e]["down_proj"] for e in range(n)])
    return out


def write_shards(folder, tensors, shard_bytes):
    """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    names = list(tensors)
    shards, cur, cur_bytes = [], [], 0
    for n in names:
        nb = tensors[n].numel() * tensors[n].element_size()
        if cur and cur_bytes + nb > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(n)
        cur_bytes += nb
    shards.append(cur)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if len(shards) == 1:
        save_file({n: tensors[n] for n in names}, os.path.join(folder, "model.safetensors"), {"format": "pt"})
        return 1
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in shard}, os.path.join(folder, fname), {"format": "pt"})
        for n in shard:
            weight_map[n] = fname
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return len(shards)


def read_folder(folder):
    out = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors") and fn.startswith("model"):
            with safe_open(os.path.join(folder, fn), framework="pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    return out


def save_checkpoint(model, folder, max_shard, fp8=False, config_edit=None):
    """HF's save_pretrained of the bf16 model (the router's e_score_correction_bias kept F32, as
    DeepSeek ships it). transformers 5 writes DeepSeek's per-expert layout itself
    (mlp.experts.<e>.{gate,up,down}_proj.weight); that is checked, not assumed. The fp8 folder
    takes HF's config.json / generation_config.json, its weights are written by write_shards."""
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    for mod in m16.modules():
        if "e_score_correction_bias" in getattr(mod, "_buffers", {}):
            mod._buffers["e_score_correction_bias"] = mod._buffers["e_score_correction_bias"].float()
    target = folder + ".hfsave" if fp8 else folder
    shutil.rmtree(target, ignore_errors=True)
    m16.save_pretrained(target, max_shard_size=max_shard)
    hf = read_folder(target)
    ds = to_ds_layout({k: v.detach().float() for k, v in model.state_dict().items()})
    info = {
        "hf_save_pretrained_files": sorted(os.listdir(target)),
        "hf_save_pretrained_dtypes": {str(v.dtype): sum(1 for x in hf.values() if x.dtype == v.dtype) for v in hf.values()},
        "hf_layout_equals_ds_layout": set(hf) == set(ds),
        "hf_values_equal_model": all(torch.equal(hf[k].float(), ds[k]) for k in ds if k in hf),
    }
    tensors = hf
    if fp8:
        os.makedirs(folder, exist_ok=True)
        for fn in ("config.json", "generation_config.json"):
            if os.path.exists(os.path.join(target, fn)):
                shutil.copy(os.path.join(target, fn), os.path.join(folder, fn))
        shutil.rmtree(target, ignore_errors=True)
        tensors = {}
        for k, v in ds.items():
            if is_fp8_weight(k, v):
                q, s = quantize_fp8(v)
                tensors[k] = q
                tensors[k + "_scale_inv"] = s
            elif k.endswith("e_score_correction_bias") or ".indexer.k_norm." in k:
                tensors[k] = v.float()  # F32, as V3.2's checkpoint stores them
            else:
                tensors[k] = v.to(torch.bfloat16)
        info["shards"] = write_shards(folder, tensors, int(max_shard.rstrip("KB")) * 1000)
    if config_edit:
        cfg_path = os.path.join(folder, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        config_edit(cfg)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    return tensors, info


# ----------------------------------------------------------------------------------------------
# fp8 e4m3 with 128x128 block scales, as DeepSeek ships V3/V3.2


def is_fp8_weight(name, t):
    """Linear projections of attention (incl. the indexer's wq_b and wk), dense MLP, shared and
    routed experts. Not: embeddings, lm_head, norms, the router (mlp.gate), the indexer's
    weights_proj (V3.2 ships it bf16)."""
    if t.ndim != 2 or not name.endswith(".weight"):
        return False
    return not any(s in name for s in ("embed_tokens", "lm_head", "mlp.gate.weight", "weights_proj"))


def quantize_fp8(w):
    rows, cols = w.shape
    sr, sc = -(-rows // BLOCK), -(-cols // BLOCK)
    scale = torch.empty(sr, sc, dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK].float()
            amax = blk.abs().max().item()
            s = torch.tensor(amax / FP8_MAX if amax > 0 else 1.0, dtype=torch.float32)
            scale[i, j] = s
            q[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK] = (blk / s).clamp(-FP8_MAX, FP8_MAX).to(
                torch.float8_e4m3fn
            )
    return q, scale


def dequantize_fp8(q, scale):
    rows, cols = q.shape
    s = scale.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:rows, :cols]
    return q.to(torch.float32) * s


# ----------------------------------------------------------------------------------------------
# recording HF's forward


class Recorder:
    """Forward hooks on HF's modules: indexer top-k and raw scores, routing, hidden states, and
    (when debug is on) layer-0 intermediates. The raw indexer scores are the tensor HF calls
    .topk on, caught by wrapping torch.Tensor.topk while an indexer's forward runs."""

    _orig_topk = torch.Tensor.topk
    active = None

    def __init__(self, model):
        self.model = model
        self.handles = []
        self.debug = False
        self.reset()
        inner = model.model
        self._hook(inner.embed_tokens, lambda m, i, o: self.hidden.__setitem__("embed", o.detach().clone()))
        self._hook(inner.norm, lambda m, i, o: self.hidden.__setitem__("final_norm", o.detach().clone()))
        self._hook(inner.rotary_emb, lambda m, i, o: self._dbg("cos", o[0]) or self._dbg("sin", o[1]))
        for li, layer in enumerate(inner.layers):
            self._hook(layer, self._layer_hook(li))
            attn = layer.self_attn
            self._hook(attn, self._attn_hook(li))
            idx = getattr(attn, "indexer", None)
            if idx is not None:
                self.handles.append(idx.register_forward_pre_hook(self._idx_pre(li)))
                self._hook(idx, self._idx_post(li))
                if li == 0:
                    self._hook(idx.wq_b, lambda m, i, o: self._dbg("indexer.wq_b_out", o))
                    self._hook(idx.k_norm, lambda m, i, o: self._dbg("indexer.k_norm_out", o))
                    self._hook(idx.weights_proj, lambda m, i, o: self._dbg("indexer.weights_proj_out", o))
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and not isinstance(gate, torch.nn.Linear):
                self._hook(gate, self._gate_hook(li))
            if li == 0:
                for sub in ("q_proj", "q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm"):
                    mod = getattr(attn, sub, None)
                    if mod is not None:
                        self._hook(mod, (lambda s: lambda m, i, o: self._dbg(s + "_out", o))(sub))
                self.handles.append(
                    attn.o_proj.register_forward_pre_hook(lambda m, i: self._dbg("o_proj_in", i[0]))
                )

    def _hook(self, mod, fn):
        self.handles.append(mod.register_forward_hook(fn))

    def reset(self):
        self.hidden, self.topk, self.scores, self.route, self.dbg = {}, {}, {}, {}, {}

    def _dbg(self, name, t):
        if self.debug:
            self.dbg[name] = t.detach().clone()

    def _layer_hook(self, li):
        def fn(m, i, o):
            h = o[0] if isinstance(o, tuple) else o
            self.hidden[li] = h.detach().clone()

        return fn

    def _attn_hook(self, li):
        def fn(m, i, o):
            if isinstance(o, tuple) and len(o) == 3 and o[2] is not None:
                self.topk.setdefault(li, o[2].detach().clone())
            if li == 0:
                self._dbg("self_attn_out", o[0])

        return fn

    def _idx_pre(self, li):
        def fn(m, args):
            Recorder.active = (self, li)

        return fn

    def _idx_post(self, li):
        def fn(m, i, o):
            Recorder.active = None
            self.topk[li] = o.detach().clone()

        return fn

    def _gate_hook(self, li):
        def fn(m, i, o):
            logits, w, idx = o
            self.route[li] = (logits.detach().clone(), w.detach().clone(), idx.detach().clone())

        return fn


def _topk_spy(self, *a, **k):
    if Recorder.active is not None:
        rec, li = Recorder.active
        rec.scores[li] = self.detach().clone()
    return Recorder._orig_topk(self, *a, **k)


torch.Tensor.topk = _topk_spy


def forward(model, rec, ids, **kw):
    rec.reset()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), **kw)
    return out


def effective(topk_row, t):
    """The keys the attention really uses for query t: the selected ones that are causal."""
    return sorted(int(i) for i in topk_row if i <= t)


def tie_rows(scores, k):
    """Query rows where the k-th and (k+1)-th best causal scores are equal (then HF's choice
    among them is torch.topk's, and any tied choice is equally right)."""
    return [t for t, gap in enumerate(index_gaps(scores, k)) if gap == 0.0]


def index_gaps(scores, k):
    """Per query row: (k-th best - (k+1)-th best causal score) / max |causal score|; None where
    the row has at most k causal keys (all of them are used)."""
    gaps = []
    for t in range(scores.shape[0]):
        valid = scores[t, : t + 1].double()
        if valid.numel() <= k:
            gaps.append(None)
            continue
        v = torch.sort(valid, descending=True).values
        gaps.append(((v[k - 1] - v[k]) / valid.abs().max().clamp_min(1e-30)).item())
    return gaps


def router_margins(gate, logits, chosen):
    """Per token: the smallest margin of HF's routing decision, recomputed from the router
    logits as HF's TopkRouter decides (sigmoid + e_score_correction_bias, best topk_group groups
    by the sum of each group's 2 best, then the top_k experts of those groups): min of the group
    margin and the expert margin. Near zero: another implementation may route differently."""
    sfc = logits.double().sigmoid() + gate.e_score_correction_bias.double()
    T, E = sfc.shape
    G = gate.num_group
    grp = sfc.view(T, G, E // G).topk(2, dim=-1)[0].sum(-1)
    out = []
    for t in range(T):
        m = float("inf")
        if gate.topk_group < G:
            gs = torch.sort(grp[t], descending=True).values
            m = (gs[gate.topk_group - 1] - gs[gate.topk_group]).item()
        groups = torch.sort(grp[t], descending=True).indices[: gate.topk_group]
        allowed = torch.zeros(E, dtype=torch.bool)
        for g in groups.tolist():
            allowed[g * (E // G) : (g + 1) * (E // G)] = True
        sel = torch.zeros(E, dtype=torch.bool)
        sel[chosen[t]] = True
        rest = sfc[t][allowed & ~sel]
        if rest.numel():
            m = min(m, (sfc[t][sel].min() - rest.max()).item())
        out.append(m)
    return out


def record_prompt(model, rec, ids, tag, tensors, cfg, debug=False):
    rec.debug = debug
    out = forward(model, rec, ids, use_cache=False)
    T = len(ids)
    tensors[f"{tag}.logits"] = out.logits[0].float().contiguous()
    res = {"ids": ids}
    layers = []
    k = getattr(cfg, "index_topk", None)
    for li in range(cfg.num_hidden_layers):
        L = {"hidden_norm": [g8(x) for x in rec.hidden[li][0].norm(dim=-1)]}
        if li in rec.topk:
            tk = rec.topk[li][0]
            L["indexer"] = "full" if li in rec.scores else "shared"
            L["topk_raw"] = tk.tolist()
            L["topk_effective"] = [effective(tk[t].tolist(), t) for t in range(T)]
            if li in rec.scores:
                sc = rec.scores[li][0].float()
                tensors[f"{tag}.L{li}.index_scores"] = sc.contiguous()
                L["index_scores_tensor"] = f"{tag}.L{li}.index_scores"
                gaps = index_gaps(sc, k)
                real = [g for g in gaps if g is not None]
                L["tie_rows"] = tie_rows(sc, k)
                L["index_min_rel_gap"] = g8(min(real)) if real else None
                L["index_near_tie_rows"] = [t for t, g in enumerate(gaps) if g is not None and g < 1e-5]
        if li in rec.route:
            logits, w, idx = rec.route[li]
            order = torch.argsort(idx, dim=-1)
            L["experts"] = torch.gather(idx, 1, order).tolist()
            L["expert_weights"] = [[g8(x) for x in row] for row in torch.gather(w, 1, order)]
            tensors[f"{tag}.L{li}.router_logits"] = logits.float().contiguous()
            margins = router_margins(model.model.layers[li].mlp.gate, logits, idx)
            L["router_min_margin"] = g8(min(margins))
            L["router_near_tie_tokens"] = [t for t, m in enumerate(margins) if m < 1e-5]
        layers.append(L)
    res["layers"] = layers
    res["embed_norm"] = [g8(x) for x in rec.hidden["embed"][0].norm(dim=-1)]
    res["final_norm_norm"] = [g8(x) for x in rec.hidden["final_norm"][0].norm(dim=-1)]
    res["logits_tensor"] = f"{tag}.logits"
    if debug:
        res["debug_tensors"] = record_debug(model, rec, tag, tensors, cfg)
    rec.debug = False
    return res, out.logits[0].float()


def record_debug(model, rec, tag, tensors, cfg):
    """Layer-0 intermediates; post-RoPE values recomputed with the modeling file's own functions."""
    d = rec.dbg
    names = []
    mod = sys.modules[type(model.model.layers[0].self_attn).__module__]
    cos, sin = d["cos"], d["sin"]
    attn = model.model.layers[0].self_attn
    nope, rope = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    q_all = d.get("q_b_proj_out", d.get("q_proj_out"))
    T = q_all.shape[1]
    q = q_all.view(1, T, -1, nope + rope).transpose(1, 2)
    q_rot = q[..., nope:]
    k_rot = d["kv_a_proj_with_mqa_out"][..., cfg.kv_lora_rank :].view(1, 1, T, rope)
    if getattr(cfg, "rope_interleave", True):
        qr, kr = mod.apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin)
    else:
        qr, kr = mod.apply_rotary_pos_emb(q_rot, k_rot, cos, sin)
    d["mla_q_rot_after_rope"] = qr[0].transpose(0, 1)  # [T, H, rope], HF's output layout
    d["mla_k_rot_after_rope"] = kr[0, 0]  # [T, rope]
    idx = getattr(attn, "indexer", None)
    if idx is not None:
        H, D = idx.n_heads, idx.head_dim
        iq = d["indexer.wq_b_out"].view(1, T, H, D)
        ik = d["indexer.k_norm_out"].unsqueeze(2)
        iq_rot, iq_pass = torch.split(iq, [rope, D - rope], dim=-1)
        ik_rot, ik_pass = torch.split(ik, [rope, D - rope], dim=-1)
        fn = mod.apply_rotary_pos_emb if cfg.model_type == "deepseek_v32" else mod.apply_rotary_pos_emb_interleave
        iq_rot, ik_rot = fn(iq_rot, ik_rot, cos, sin, unsqueeze_dim=2)
        d["indexer.q_after_rope"] = torch.cat([iq_rot, iq_pass], -1)[0]  # [T, H, D]
        d["indexer.k_after_rope"] = torch.cat([ik_rot, ik_pass], -1)[0, :, 0]  # [T, D]
    for name, t in sorted(d.items()):
        t = t.float()
        while t.ndim > 2 and t.shape[0] == 1:
            t = t[0]
        key = f"{tag}.dbg.L0.{name}"
        tensors[key] = t.contiguous()
        names.append(key)
    return names


def decode_run(model, rec, ids, tag, tensors, full_logits, cfg):
    """Prefill len-3 tokens with the cache, then 3 single-token steps."""
    n = len(ids)
    pre = n - DECODE_STEPS
    rec.reset()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[:pre]]), use_cache=True)
    pkv = out.past_key_values
    prefill_diff = (out.logits[0].float() - full_logits[:pre]).abs().max().item()
    steps, logits = [], []
    for j in range(DECODE_STEPS):
        rec.reset()
        with torch.no_grad():
            o = model(input_ids=torch.tensor([[ids[pre + j]]]), past_key_values=pkv, use_cache=True)
        pkv = o.past_key_values
        logits.append(o.logits[0, -1].float())
        st = {"position": pre + j}
        tk = {li: rec.topk[li][0, 0].tolist() for li in rec.topk}
        if tk:
            st["topk_raw"] = {str(li): v for li, v in tk.items()}
            st["topk_effective"] = {str(li): effective(v, pre + j) for li, v in tk.items()}
        if rec.route:
            st["experts"] = {str(li): sorted(r[2][0].tolist()) for li, r in rec.route.items()}
        steps.append(st)
    L = torch.stack(logits)
    tensors[f"{tag}.decode_logits"] = L.contiguous()
    diff = (L - full_logits[pre:]).abs().max().item()
    return {
        "prompt": DECODE_PROMPT,
        "prefill_tokens": pre,
        "decode_logits_tensor": f"{tag}.decode_logits",
        "steps": steps,
        "max_abs_diff_decode_vs_full_prefill": diff,
        "max_abs_diff_prefill_part_vs_full_prefill": prefill_diff,
        "logit_scale_max_abs": full_logits.abs().max().item(),
    }


def run_all(model, cfg, tensors, prefix=""):
    rec = Recorder(model)
    prompts, fulls = [], []
    for pi, ids in enumerate(PROMPTS):
        r, logits = record_prompt(model, rec, ids, f"{prefix}p{pi}", tensors, cfg, debug=(pi == DEBUG_PROMPT))
        prompts.append(r)
        fulls.append(logits)
    dec = decode_run(model, rec, PROMPTS[DECODE_PROMPT], f"{prefix}p{DECODE_PROMPT}", tensors, fulls[DECODE_PROMPT], cfg)
    for h in rec.handles:
        h.remove()
    return prompts, fulls, dec


def cross_check(model, fulls32, prompts32, dtype, device):
    """HF's same forward in another dtype or on another device (float64 on the CPU: how far
    float32 is from exact; float32 on the GPU, TF32 off): logits' largest difference and the
    query rows whose effective selection differs."""
    if device == "cuda" and not torch.cuda.is_available():
        return None
    m2 = copy.deepcopy(model).to(device=device, dtype=dtype)
    rec = Recorder(m2)
    res = {"dtype": str(dtype), "device": device, "max_abs_diff_logits": 0.0, "effective_selection_rows_differing": 0, "rows_compared": 0}
    for pi, ids in enumerate(PROMPTS):
        rec.reset()
        with torch.no_grad():
            out = m2(input_ids=torch.tensor([ids], device=device), use_cache=False)
        d = (out.logits[0].double().cpu() - fulls32[pi].double()).abs().max().item()
        res["max_abs_diff_logits"] = max(res["max_abs_diff_logits"], d)
        for li, tk in rec.topk.items():
            for t in range(len(ids)):
                res["rows_compared"] += 1
                if effective(tk[0, t].tolist(), t) != prompts32[pi]["layers"][li]["topk_effective"][t]:
                    res["effective_selection_rows_differing"] += 1
    for h in rec.handles:
        h.remove()
    return res


def f64_check(model, cfg, fulls32, prompts32):
    return {
        "f64_cpu": cross_check(model, fulls32, prompts32, torch.float64, "cpu"),
        "f32_gpu": cross_check(model, fulls32, prompts32, torch.float32, "cuda"),
    }


def reload_check(cls, folder, fulls):
    try:
        m, info = cls.from_pretrained(
            folder,
            dtype=torch.float32,
            attn_implementation="eager",
            experts_implementation="eager",
            output_loading_info=True,
        )
        m.eval()
        with torch.no_grad():
            diffs = [
                (m(input_ids=torch.tensor([ids])).logits[0].float() - fulls[pi]).abs().max().item()
                for pi, ids in enumerate(PROMPTS)
            ]
        keys = {k: sorted(str(x) for x in v)[:20] for k, v in info.items() if v}
        return {"loads": True, "max_abs_diff_vs_in_memory": max(diffs), "loading_info": keys}, m
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        log(f"reload of {folder} failed:", repr(e)[:800])
        traceback.print_exc()
        return {"loads": False, "error": repr(e)[:800]}, None


def meta(name, cls, extra):
    return {
        "name": name,
        "hf_class": cls.__name__,
        "made_by": "scripts/device-hf-oracle.sh (python3 scripts/hf_oracle.py) on the device machine",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "forward": "float32, eager attention, CPU, batch 1, no attention_mask argument",
        **extra,
    }


def finish(folder, ref, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "reference.safetensors"))
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    copy_tokenizer(folder)


def copy_tokenizer(folder):
    name = os.path.basename(folder)
    src = "tests/data/tokenizers/" + ("deepseek-v3-tiny" if name.startswith("deepseek") else "glm-tiny")
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        p = os.path.join(src, fn)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(folder, fn))
        else:
            log(f"{name}: no {p}; tokenizer left out")


# ----------------------------------------------------------------------------------------------
# the checkpoints


def make_v32(out):
    name = "deepseek_v32-tiny"
    folder = os.path.join(out, name)
    cls = transformers.DeepseekV32ForCausalLM
    cfg = config_v32()
    model = build(cls, cfg)
    randomize(model, 32)
    _, info = save_checkpoint(model, folder, "300KB")
    tensors = {}
    prompts, fulls, dec = run_all(model, cfg, tensors)
    ref = {
        "meta": meta(name, cls, {"save": info}),
        "prompts": prompts,
        "decode": dec,
        "cross_checks": f64_check(model, cfg, fulls, prompts),
        "softmax_scale": model.model.layers[0].self_attn.scaling,
        "rope_attention_scaling": model.model.rotary_emb.attention_scaling,
        "rope_inv_freq": [float(x) for x in model.model.rotary_emb.inv_freq],
        "legacy_rope_scaling": legacy_rope_check(cfg),
    }
    ref["reload"], _ = reload_check(cls, folder, fulls)
    finish(folder, ref, tensors)
    return model, cfg, fulls


def legacy_rope_check(cfg):
    """Real config.json files carry "rope_scaling" + "rope_theta"; does HF read them the same?"""
    try:
        d = cfg.to_dict()
        rp = dict(d.pop("rope_parameters"))
        d["rope_theta"] = rp.pop("rope_theta")
        rp["type"] = rp.pop("rope_type")
        d["rope_scaling"] = rp
        for k in ("transformers_version", "architectures", "qk_head_dim", "head_dim"):
            d.pop(k, None)
        c2 = type(cfg).from_dict(d)
        re1 = transformers.models.deepseek_v32.modeling_deepseek_v32.DeepseekV32RotaryEmbedding(cfg)
        re2 = transformers.models.deepseek_v32.modeling_deepseek_v32.DeepseekV32RotaryEmbedding(c2)
        return {
            "rope_parameters_read_back": c2.rope_parameters,
            "same_inv_freq": bool(torch.equal(re1.inv_freq, re2.inv_freq)),
            "same_attention_scaling": re1.attention_scaling == re2.attention_scaling,
        }
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)[:500]}


def make_v32_fp8(out, base_model, cfg, bf16_fulls):
    name = "deepseek_v32-fp8-tiny"
    folder = os.path.join(out, name)
    cls = transformers.DeepseekV32ForCausalLM
    qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [BLOCK, BLOCK]}

    def edit(c):
        c["quantization_config"] = dict(qc)

    stored, info = save_checkpoint(base_model, folder, "250KB", fp8=True, config_edit=edit)
    # The reference: HF's forward with w = fp8 * scale_inv (per 128x128 block) in float32.
    deq = {}
    for k, v in stored.items():
        if k.endswith("_scale_inv"):
            continue
        if v.dtype == torch.float8_e4m3fn:
            deq[k] = dequantize_fp8(v, stored[k + "_scale_inv"])
        else:
            deq[k] = v.float()
    model = build(cls, config_v32())
    missing, unexpected = model.load_state_dict(from_ds_layout(deq), strict=False)
    assert not unexpected and not [m for m in missing if "inv_freq" not in m], (missing, unexpected)
    tensors = {}
    prompts, fulls, dec = run_all(model, cfg, tensors)
    fp8_names = sorted(k for k, v in stored.items() if v.dtype == torch.float8_e4m3fn)
    ref = {
        "meta": meta(name, cls, {"save": info, "quantization_config": qc}),
        "fp8_tensors": fp8_names,
        "scale_shapes": {k: list(stored[k + "_scale_inv"].shape) for k in fp8_names if ".layers.0." in k or ".layers.1.mlp.experts.0." in k},
        "prompts": prompts,
        "decode": dec,
        "hf_load_as_is": fp8_as_is(folder, fulls, dequantize=False),
        "hf_load_dequantize_true": fp8_as_is(folder, fulls, dequantize=True, ref_sd=from_ds_layout(deq)),
        "max_abs_diff_logits_vs_bf16_checkpoint": max(
            (a - b).abs().max().item() for a, b in zip(fulls, bf16_fulls)
        ),
    }
    finish(folder, ref, tensors)
    return fulls


def fp8_as_is(folder, fulls, dequantize, ref_sd=None):
    """HF's own loading of the fp8 folder (FP8Linear / FP8Experts on the GPU, or dequantize=True),
    then its forward; loading and running are recorded apart (the GPU forward needs the hub's
    finegrained-fp8 or DeepGEMM kernels, which an offline machine may lack)."""
    kw = dict(dtype=torch.bfloat16, attn_implementation="eager")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        kw["device_map"] = dev
    if dequantize:
        kw["quantization_config"] = transformers.FineGrainedFP8Config(dequantize=True)
        kw["dtype"] = torch.float32
    res = {"device": dev, "dtype": str(kw["dtype"])}
    try:
        m, info = transformers.DeepseekV32ForCausalLM.from_pretrained(folder, output_loading_info=True, **kw)
        m = m.eval()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        log(f"fp8 load (dequantize={dequantize}) failed:", repr(e)[:800])
        traceback.print_exc()
        res.update(loads=False, error=repr(e)[:800])
        return res
    res.update(
        loads=True,
        fp8_module_classes=sorted({type(x).__name__ for x in m.modules() if "fp8" in type(x).__name__.lower()}),
        parameter_dtypes=sorted({str(p.dtype) for p in m.parameters()}),
        missing_keys=sorted(info.get("missing_keys", []))[:20],
        unexpected_keys=sorted(info.get("unexpected_keys", []))[:20],
        mismatched_keys=[str(x) for x in info.get("mismatched_keys", [])][:20],
    )
    if ref_sd is not None:  # which weights HF dequantised otherwise than w = fp8 * scale_inv[i/128][j/128]
        sd = m.state_dict()
        res["weights_differing_from_reference_dequant"] = {
            k: g8((sd[k].float().cpu() - v).abs().max()) for k, v in ref_sd.items() if k in sd and not torch.equal(sd[k].float().cpu(), v)
        }
    try:
        diffs = []
        with torch.no_grad():
            for pi, ids in enumerate(PROMPTS):
                lg = m(input_ids=torch.tensor([ids], device=dev)).logits[0].float().cpu()
                diffs.append((lg - fulls[pi]).abs().max().item())
        res.update(runs=True, max_abs_diff_logits_vs_dequantised_reference=max(diffs), per_prompt=diffs)
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        log(f"fp8 forward (dequantize={dequantize}) failed:", repr(e)[:800])
        res.update(runs=False, error=repr(e)[:800])
    return res


GLM_PATTERN = "FSSF"


def make_glm(out):
    name = "glm_moe_dsa-tiny"
    folder = os.path.join(out, name)
    cls = transformers.GlmMoeDsaForCausalLM
    cfg = config_glm()
    model = build(cls, cfg)
    randomize(model, 55)
    _, info = save_checkpoint(model, folder, "300KB")
    tensors = {}
    prompts, fulls, dec = run_all(model, cfg, tensors)
    ref = {
        "meta": meta(name, cls, {"save": info, "indexer_types": cfg.indexer_types}),
        "prompts": prompts,
        "decode": dec,
        "cross_checks": f64_check(model, cfg, fulls, prompts),
        "softmax_scale": model.model.layers[0].self_attn.scaling,
    }
    # The IndexCache pattern through HF's own knob: the same weights, indexer_types from
    # index_topk_pattern; shared layers have no indexer module.
    pcfg = config_glm(index_topk_pattern=GLM_PATTERN)
    pmodel = build(cls, pcfg)
    sd = {k: v for k, v in model.state_dict().items()}
    missing, unexpected = pmodel.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "inv_freq" not in m], missing
    pt = {}
    pprompts, pfulls, pdec = run_all(pmodel, pcfg, pt, prefix=f"pattern_{GLM_PATTERN}.")
    # The logits of this run are glm_moe_dsa-shared-tiny's (same weights, same pattern; its
    # reference records that they are equal): only the scores and intermediates are kept here.
    tensors.update({k: v for k, v in pt.items() if not k.endswith("logits")})
    elsewhere = "glm_moe_dsa-shared-tiny/reference.safetensors "
    for r in pprompts:
        r["logits_tensor"] = elsewhere + r["logits_tensor"].split(".", 1)[1]
    pdec["decode_logits_tensor"] = elsewhere + pdec["decode_logits_tensor"].split(".", 1)[1]
    ref["pattern_runs"] = {
        GLM_PATTERN: {
            "indexer_types": pcfg.indexer_types,
            "how": "GlmMoeDsaConfig(index_topk_pattern='FSSF') -> indexer_types; same weights, "
            "the shared layers' indexer tensors unused (HF builds no indexer there)",
            "unused_tensors": sorted(unexpected),
            "prompts": pprompts,
            "decode": pdec,
        }
    }
    ref["reload"], _ = reload_check(cls, folder, fulls)
    finish(folder, ref, tensors)
    return model, pfulls


def make_glm_shared(out, full_model, pattern_fulls):
    """config.json with index_topk_freq / index_skip_topk_offset (no indexer_types): HF derives
    full iff max(i - offset + 1, 0) % freq == 0; freq 3, offset 1 -> FSSF. The shared layers'
    indexer tensors are not in the shards."""
    name = "glm_moe_dsa-shared-tiny"
    folder = os.path.join(out, name)
    cls = transformers.GlmMoeDsaForCausalLM
    cfg = config_glm(index_topk_freq=3, index_skip_topk_offset=1)
    model = build(cls, cfg)
    sd = full_model.state_dict()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "inv_freq" not in m], missing
    shared = [i for i, t in enumerate(cfg.indexer_types) if t == "shared"]

    def edit(c):
        c.pop("indexer_types", None)
        c["index_topk_freq"] = 3
        c["index_skip_topk_offset"] = 1

    _, info = save_checkpoint(model, folder, "50000KB", config_edit=edit)
    tensors = {}
    prompts, fulls, dec = run_all(model, cfg, tensors)
    ref = {
        "meta": meta(name, cls, {"save": info, "indexer_types": cfg.indexer_types, "shared_layers": shared}),
        "prompts": prompts,
        "decode": dec,
        "same_weights_as": "glm_moe_dsa-tiny (minus the shared layers' indexer tensors)",
        "max_abs_diff_logits_vs_glm_moe_dsa_tiny_pattern_FSSF_run": max(
            (a - b).abs().max().item() for a, b in zip(fulls, pattern_fulls)
        ),
    }
    r, m = reload_check(cls, folder, fulls)
    if m is not None:
        r["indexer_types_read_back"] = m.config.indexer_types
    ref["reload"] = r
    finish(folder, ref, tensors)


def make_lite(out):
    name = "glm4_moe_lite-tiny"
    folder = os.path.join(out, name)
    cls = transformers.Glm4MoeLiteForCausalLM
    cfg = config_lite()
    model = build(cls, cfg)
    randomize(model, 47)
    _, info = save_checkpoint(model, folder, "50000KB")
    tensors = {}
    prompts, fulls, dec = run_all(model, cfg, tensors)
    ref = {
        "meta": meta(name, cls, {"save": info, "mlp_layer_types": cfg.mlp_layer_types}),
        "prompts": prompts,
        "decode": dec,
        "cross_checks": f64_check(model, cfg, fulls, prompts),
        "softmax_scale": model.model.layers[0].self_attn.scaling,
    }
    ref["reload"], _ = reload_check(cls, folder, fulls)
    finish(folder, ref, tensors)


def facts():
    """What a reimplementation must match, printed for the log (and README)."""
    for c in (config_v32(), config_glm(), config_lite()):
        log(type(c).__name__, json.dumps(c.to_dict(), sort_keys=True, default=str)[:3000])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    log("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())
    log("prompts", PROMPTS)
    status = 0

    def step(name, fn, *a):
        nonlocal status
        if only and name not in only:
            return None
        try:
            log("==", name)
            return fn(*a)
        except Exception:  # noqa: BLE001 - go on with the others, fail at the end
            status = 1
            log(traceback.format_exc())
            return None

    step("facts", facts)
    r = step("deepseek_v32-tiny", make_v32, args.out)
    if r is not None:
        step("deepseek_v32-fp8-tiny", make_v32_fp8, args.out, *r)
    g = step("glm_moe_dsa-tiny", make_glm, args.out)
    if g is not None:
        step("glm_moe_dsa-shared-tiny", make_glm_shared, args.out, *g)
    step("glm4_moe_lite-tiny", make_lite, args.out)
    with open(os.path.join(args.out, "oracle.log"), "w") as f:
        f.write("\n".join(LOG) + "\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
