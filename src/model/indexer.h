#pragma once
// A lightning indexer attached to one Full (F) layer of a dense model (DeepSeek-V3.2 form, fed
// from the layer's normalised input x instead of an MLA query latent):
//   q[t]   = RoPE(Wq x[t])                       [n_heads, head_dim], RoPE on the leading rope_dim
//   k[s]   = RoPE(LayerNorm(Wk x[s]))            [head_dim], one key per token shared by all heads
//   w[t]   = Wproj x[t] * n_heads^-1/2 * head_dim^-1/2   [n_heads]
//   I[t,s] = sum_h w[t,h] * ReLU(q[t,h] . k[s]),  s <= t;  T_t = TopK_s(I[t, s], topk)
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/linear.h"
#include "ops/rope.h"

namespace ic {

struct IndexerConfig {
  int64_t n_heads = 4;
  int64_t head_dim = 64;
  int64_t rope_dim = 64;  // leading dims of q and k that RoPE rotates (<= head_dim, even)
  ops::RopeStyle rope_style = ops::RopeStyle::kHalf;
  float rope_base = 10000.0f;
  float norm_eps = 1e-6f;  // the key LayerNorm
  int64_t topk = 256;

  float weight_scale() const;  // n_heads^-1/2 * head_dim^-1/2
  void validate(int64_t model_dim) const;  // throws ic::Error naming the bad field
};

// Weights of one indexer, F32 on the host: the master copy the trainer updates and the file
// format stores; the engine derives its device/packed forms from it.
struct IndexerWeights {
  Tensor wq;      // [n_heads * head_dim, dim]
  Tensor wk;      // [head_dim, dim]
  Tensor k_norm;  // [head_dim] LayerNorm scale
  Tensor k_bias;  // [head_dim] LayerNorm bias
  Tensor wproj;   // [n_heads, dim]

  static IndexerWeights zeros(const IndexerConfig& cfg, int64_t dim);
  // Small random init (normal, std 1/sqrt(dim) for projections; LayerNorm scale 1, bias 0).
  static IndexerWeights random(const IndexerConfig& cfg, int64_t dim, uint64_t seed);
  void check(const IndexerConfig& cfg, int64_t dim) const;  // shapes and dtypes
};

// One indexer's weights as the GPU runs them: F32 projections for cuBLAS, the head-weight
// scale folded into wproj, LayerNorm parameters on the device. (The CPU runs the master
// IndexerWeights directly: its LinearWeight would quantise them to int8.)
struct IndexerRunWeights {
  ops::LinearWeight wq, wk, wproj_scaled;
  Tensor k_norm, k_bias;  // F32 [head_dim] on the device
  static IndexerRunWeights upload(const IndexerConfig& cfg, const IndexerWeights& w, Device device);
};

// The indexer's per-token tensors for n tokens at positions `pos`.
struct IndexerActivations {
  Tensor q;  // F32 [n, n_heads, head_dim], RoPE applied
  Tensor k;  // F32 [n, head_dim], LayerNorm then RoPE
  Tensor w;  // F32 [n, n_heads], weight_scale() folded in
};

// x: F32 [n, dim] (the layer's attention-norm output) on the CPU; pos: I32 [n].
IndexerActivations indexer_project(const IndexerConfig& cfg, const IndexerWeights& weights, const Tensor& x,
                                   const Tensor& pos);
// The same on the GPU: x F32 [n, dim] and pos I32 [n] on the weights' device; the activations
// come back on that device.
IndexerActivations indexer_project(const IndexerConfig& cfg, const IndexerRunWeights& weights, const Tensor& x,
                                   const Tensor& pos);

// The indexer and its top-k written out plainly, in double: every score I[t, s], s <= t, of n
// tokens at positions 0..n-1, each row sorted by (score desc, index asc); -1 pads rows with
// fewer than topk predecessors. x: [n, dim] host floats. Returns [n, topk].
std::vector<int32_t> indexer_topk_reference(const IndexerConfig& cfg, const IndexerWeights& weights, const float* x,
                                            int64_t n, int64_t dim);

}  // namespace ic
