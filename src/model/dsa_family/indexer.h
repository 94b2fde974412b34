#pragma once
// The DeepSeek lightning indexer of one DSA layer, as HF's DeepseekV32Indexer /
// GlmMoeDsaIndexer compute it (transformers 5.17), for n query tokens at positions p0 ..:
//   q[t]    = wq_b(q_latent[t])                    [Hi, Di]; q_latent is MLA's RMSNorm'd query latent
//   k[s]    = LayerNorm(wk(x[s]))                  [Di]  (weight and bias, eps 1e-6), one per token
//   RoPE on the leading qk_rope_head_dim dims of q and k ([rope, nope] order), half-split for
//   deepseek_v32, interleaved (HF's de-interleaving output) for glm_moe_dsa, same cos/sin as MLA
//   w[t]    = weights_proj(x[t]) * Hi^-1/2
//   I[t, s] = sum_h w[t, h] * ReLU(q[t, h] . k[s] * Di^-1/2),   s <= p0 + t
//   T_t     = the index_topk largest I[t, s]
// HF's bf16 indexer notes that DeepSeek's release rotates q and k by a Hadamard matrix and scores
// in fp8; HF skips both (the rotation is orthogonal, fp8 is a speed measure), and so does this
// reference. Since Di^-1/2 > 0 it moves out of the ReLU: the engine folds it into w and scores with
// ops::indexer_topk (w . ReLU(q . k)). Top-k order: score descending, then index ascending, -1 past
// the causal keys of a short row. torch.topk breaks exact ties its own way; the selections differ
// only where two keys' scores are equal at the k-th place (tests check that case by the scores).
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/rope.h"
#include "model/dsa_family/weights.h"

namespace ic::dsa {

struct IndexerActs {
  Tensor q;  // F32 [n, Hi, Di], RoPE applied
  Tensor k;  // F32 [n, Di], LayerNorm then RoPE
  Tensor w;  // F32 [n, Hi]: weights_proj(x) * Hi^-1/2 * Di^-1/2 (both scales folded)
};

// x: F32 [n, hidden], the attention norm's output; q_latent: F32 [n, q_lora].
IndexerActs indexer_project(const MlaMoeConfig& c, const RopeTable& rope, const IndexerWeights& w, const Tensor& x,
                            const Tensor& q_latent, int64_t p0);
// keys: F32 [>= p0 + n, Di], the layer's indexer key cache with the n new keys written. Returns
// I32 [n, topk].
Tensor indexer_select(const IndexerActs& a, const Tensor& keys, int64_t p0, int64_t topk);
// The scores themselves, F32 [n, p0 + n], -inf past each causal row (taps, tests).
Tensor indexer_scores(const IndexerActs& a, const Tensor& keys, int64_t p0);

// The same in double from x and q_latent on (projections, LayerNorm, RoPE, scores), for tokens at
// positions 0 .. n-1 with no cache: scores [n * n] row-major, -inf past the causal row.
std::vector<double> indexer_scores_reference(const MlaMoeConfig& c, const RopeTable& rope, const IndexerWeights& w,
                                             const Tensor& x, const Tensor& q_latent);
// Top-k of each causal row of scores [n, T] (row t has p0 + t + 1 valid entries): score descending,
// index ascending, -1 padded. Returns [n * k].
std::vector<int32_t> topk_reference(const std::vector<double>& scores, int64_t n, int64_t T, int64_t p0, int64_t k);

}  // namespace ic::dsa
