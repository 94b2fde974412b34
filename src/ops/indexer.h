#pragma once
// Lightning indexer of DeepSeek Sparse Attention (DeepSeek-V3.2 form). For query token t at
// absolute position q_pos0 + t and key token s <= q_pos0 + t:
//   I[t, s] = sum_h w[t, h] * ReLU(q[t, h, :] . k[s, :])
// with one key per token shared by the n_heads indexer heads; w already carries
// n_heads^-1/2 * head_dim^-1/2. Later keys are masked (-inf where scores are materialised).
//
// FP8 path (as the ecosystem does it): q and k are e4m3 with one fp32 scale per row of at
// most 128 values (a q row is one head of one token, a k row is one token); q's scale is
// folded into w, so
//   I[t, s] = k_scale[s] * sum_h w'[t, h] * ReLU(q8[t, h, :] . k8[s, :]),  w' = w * q_scale.
//
// The only consumer of I in inference is top-k, so indexer_topk fuses the two and never
// holds more than one chunk of <= 64 query rows of scores, at most 4 MiB (indexer_cpu.cpp);
// indexer_scores materialises [n_q, n_keys] for training losses and debugging.
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

struct IndexerParams {
  const void* q;         // [n_q, n_heads, head_dim]; float, or e4m3 bytes when dtype is F8_E4M3
  const void* k;         // [n_keys, head_dim] indexer key cache, same dtype as q; rows
                         // < q_pos0 + n_q are read
  const float* k_scale;  // [n_keys] per-row fp8 scale; null when dtype is F32
  const float* w;        // [n_q, n_heads] head weights (fp8: q's scale folded in)
  DType dtype;           // F32 or F8_E4M3
  int64_t n_q;
  int64_t n_heads;
  int64_t head_dim;      // F8_E4M3: at most 128, one scale block per row
  int64_t n_keys;        // rows of the key cache, >= q_pos0 + n_q
  int64_t q_pos0;
};

// Largest row of values sharing one fp8 scale.
constexpr int64_t kFp8BlockSize = 128;

// Tensor fronts. q: F32 or F8_E4M3 [n_q, n_heads, head_dim]; k: same dtype [n_keys, head_dim];
// k_scale: F32 [n_keys] for fp8, an undefined Tensor for F32; w: F32 [n_q, n_heads].
// scores: F32 [n_q, n_keys]; topk: I32 [n_q, k] in ops::topk's canonical order.
void indexer_scores(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                    int64_t q_pos0, Tensor& scores);
void indexer_topk(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                  int64_t q_pos0, Tensor& topk);

// Quantise rows of `dim` (<= 128) values to e4m3 with one scale per row:
// scale = max|x| / 448 (1 for an all-zero row), x8 = e4m3(x / scale), saturating.
void quantize_fp8_rows(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale);
// The indexer query: quantise q [n_q, n_heads, head_dim] per head row and fold the scales
// into w [n_q, n_heads], giving q8 and w_folded of the same shapes.
void quantize_indexer_query(const float* q, const float* w, int64_t n_q, int64_t n_heads,
                            int64_t head_dim, uint8_t* q8, float* w_folded);

namespace cpu {
void indexer_scores(const IndexerParams& p, float* scores /* [n_q, n_keys] */);
void indexer_topk(const IndexerParams& p, int32_t* topk /* [n_q, k] */, int64_t k);
// Double accumulation, one (t, s) at a time; materialises every score.
void indexer_scores_reference(const IndexerParams& p, float* scores /* [n_q, n_keys] */);
}  // namespace cpu
namespace cuda {
void indexer_scores(const IndexerParams& p, float* scores);
void indexer_topk(const IndexerParams& p, int32_t* topk, int64_t k);
}  // namespace cuda

}  // namespace ic::ops
