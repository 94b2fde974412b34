#pragma once
// Multi-head latent attention (DeepSeek-V2/V3 MLA) on the CPU reference path, as HF's
// DeepseekV32Attention / GlmMoeDsaAttention / Glm4MoeLiteAttention define it:
//   q        = q_b_proj(RMSNorm(q_a_proj(x)))  (or q_proj(x) without q LoRA), per head [nope, rope]
//   [c, kr]  = kv_a_proj_with_mqa(x): c the kv_lora_rank latent, kr one rope key shared by all heads
//   latent   = RMSNorm(c)   (kv_a_layernorm; both LoRA norms use eps 1e-6, HF's default)
//   k[s, h]  = [W_uk[h] latent[s], RoPE(kr[s])],  v[s, h] = W_uv[h] latent[s]  (kv_b_proj rows)
//   out[t,h] = sum_s softmax_s(scale * q[t, h] . k[s, h]) v[s, h]
// over the causal keys s <= t, or over the selected ones of a DSA layer. The cache holds one row
// per token, [latent (kv_lora), RoPE(kr) (rope)] (576 floats at real size).
//
// Two forms of the same attention: naive decompresses k and v per head; absorbed (the MQA form
// DSA kernels run) moves W_uk into the query, q_abs[t, h] = W_uk[h]^T q_nope[t, h], scores every
// key against the cache row itself (q_abs . latent + q_rope . kr) and applies W_uv after the
// weighted sum of latent rows. They agree up to rounding; tests check it.
#include <cstdint>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/rope.h"
#include "model/dsa_family/weights.h"

namespace ic::dsa {

enum class MlaForm { Absorbed, Naive };

struct MlaQuery {
  Tensor q;         // F32 [n, H, nope + rope], the rope part rotated
  Tensor q_latent;  // F32 [n, q_lora] after q_a_layernorm; undefined without q LoRA
};

// h: F32 [n, hidden] (the attention norm's output) of tokens at positions p0 .. p0 + n - 1.
MlaQuery mla_query(const MlaMoeConfig& c, const RopeTable& rope, const MlaWeights& w, const Tensor& h, int64_t p0);
// The cache rows of those tokens: F32 [n, kv_lora + rope] = [RMSNorm(latent), RoPE(kr)].
Tensor mla_kv_rows(const MlaMoeConfig& c, const RopeTable& rope, const MlaWeights& w, const Tensor& h, int64_t p0);

struct MlaAttendArgs {
  const Tensor* q;          // F32 [n, H, nope + rope] from mla_query
  const float* kv;          // [p0 + n, kv_lora + rope] cache rows of positions 0 .. p0 + n - 1
  const Tensor* selection;  // I32 [n, k]: keys of each query, -1 = none; null: every causal key
  int64_t p0;
  double scale;             // MlaMoeConfig::softmax_scale()
};

// out: F32 [n, H, v_head_dim] (before o_proj). A selected index outside [0, p0 + t] is an error
// (the indexer never selects a later token). A row with no valid entry gives zeros.
void mla_attend(MlaForm form, const MlaMoeConfig& c, const MlaWeights& w, const MlaAttendArgs& a, Tensor& out);

}  // namespace ic::dsa
