#pragma once
// Indexer distillation loss with a hand-written backward for the DSA family (docs/DISTILL.md,
// "The DSA family"). One form covers both indexers the family trains:
//   the checkpoint's own DeepSeek indexer (model/dsa_family/indexer.h): q from MLA's query
//     latent (wq_b), k = LayerNorm(wk x) with weight and bias, w = weights_proj(x), RoPE from
//     the model's RopeTable (YaRN's attention factor included) on the leading qk_rope dims;
//   the project's x-fed indexer attached to a dense MLA model (model/indexer.h): q from x.
// With xq the query's input and x the attention norm's output, for n tokens at positions 0..n-1:
//   q[t, h] = RoPE(Wq xq[t]),  k[s] = RoPE(LayerNorm(Wk x[s])),  w[t] = Wproj x[t] Hi^-1/2 Di^-1/2
//   I[t, s] = sum_h w[t, h] ReLU(q[t, h] . k[s]),   s <= t
//   loss    = sum_t KL(r_t || softmax_s I[t, s]),   r_t = p_t / sum_{s <= t} p_t (rows with no mass skipped)
// (the same loss as distill_loss.h's dense form). dL/dI = softmax - r; then the weighted ReLU sum,
// RoPE's transpose, the LayerNorm backward and the projections, all in double.
// The targets p are asked for a block of `chunk` query rows at a time (the MLA teacher streams
// them, mla_teacher.h), so no [n, n] matrix is formed: memory is 4 chunk n bytes of targets,
// 8 Hi n bytes of per-row scores and 8 n (2 Hi Di + 2 Di + 2 Hi) bytes of activations and their
// gradients, besides the inputs. A plain double implementation: the tiny checkpoints the
// CPU reference path runs are its scale (the fast paths of distill_loss.h serve the llama family).
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "indexcache/distill_loss.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/rope.h"
#include "model/indexer.h"
#include "ops/rope.h"

namespace ic {

// cos and sin of every (position, pair), attention factor included, and the pair layout: half
// (i, i + dim/2) or interleaved (2i, 2i + 1) written de-interleaved (rope_d of dsa_family/indexer.cpp).
struct IndexerRope {
  int64_t dim = 0;  // rotated leading dims of each head (even)
  bool half = true;
  std::vector<double> cos, sin;  // [n * dim / 2]
  // The checkpoint's indexer: the model's table and the indexer's layout.
  static IndexerRope from_table(const dsa::RopeTable& table, MlaRope style, int64_t n);
  // The project's indexer: angle p * base^(-2i / rot_dim) (ops/rope.h).
  static IndexerRope from_base(double base, int64_t rot_dim, ops::RopeStyle style, int64_t n);
  // x[0, dim) of position pos: forward (y = R x) or transposed (y = R^T x), in place.
  void apply(double* x, int64_t pos, bool transpose) const;
};

struct FamilyIndexerShape {
  int64_t n_heads = 0, head_dim = 0, topk = 0;
  double eps = 1e-6;  // the key LayerNorm
};

// Target rows t0 .. t1-1 into out [(t1 - t0) * n].
using TargetRowsFn = std::function<void(int64_t t0, int64_t t1, float* out)>;

struct FamilyLossInput {
  Tensor xq;  // F32 [n, Dq]: the query's input (MLA's q latent, or x for the x-fed indexer)
  Tensor x;   // F32 [n, D]: the attention norm's output
  const IndexerRope* rope = nullptr;  // for >= n positions
  TargetRowsFn targets;
  int64_t chunk = 256;  // query rows per block of targets
};

// w: IndexerWeights with wq [Hi Di, Dq], wk [Di, D], k_norm and k_bias [Di], wproj [Hi, D] (F32,
// host). grad: null for the loss only, else the same shapes, and the gradient is ADDED to it.
// Stats as distill_loss's: loss, rows with mass, recall of r on the indexer's top-k (score
// descending, index ascending) of each causal row.
DistillStats family_indexer_loss(const FamilyIndexerShape& shape, const IndexerWeights& w, const FamilyLossInput& in,
                                 IndexerWeights* grad);

// The indexer's top-k (I32 [n, topk], -1 padded) and scores I (double [n * n], -inf past each
// causal row) under the same formulas (for recall and tests).
std::vector<double> family_indexer_scores(const FamilyIndexerShape& shape, const IndexerWeights& w,
                                          const Tensor& xq, const Tensor& x, const IndexerRope& rope);

// Zeros shaped like w (every tensor).
IndexerWeights zeros_like(const IndexerWeights& w);

}  // namespace ic
