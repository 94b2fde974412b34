#pragma once
// Dense causal attention with grouped-query heads over a KV cache.
//   out[i, h] = sum_s softmax_s(scale * q[i, h] . k[s, g]) v[s, g],  g = h / (n_heads / n_kv_heads),
// s over positions 0 .. q_pos0 + i (query i sits at absolute position q_pos0 + i).
#include "core/tensor.h"

namespace ic {
class ThreadPool;
}

namespace ic::ops {

struct AttentionParams {
  const float* q;     // [n_q, n_heads, head_dim]
  const float* k;     // [n_kv_heads, kv_capacity, head_dim]; positions < q_pos0 + n_q are valid
  const float* v;     // [n_kv_heads, kv_capacity, head_dim]
  float* out;         // [n_q, n_heads, head_dim]
  float* lse;         // [n_q, n_heads] natural-log sum of exp(scale * scores); may be null
  int64_t n_q;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t kv_capacity;
  int64_t q_pos0;
  float scale;
  ThreadPool* pool = nullptr;  // decode (n_q <= 2) splits its heads over it; null: OpenMP
};

// q: F32 [n_q, n_heads, head_dim]; k, v: F32 [n_kv_heads, capacity, head_dim]; out like q.
// lse: F32 [n_q, n_heads] or an undefined Tensor. pool: the CPU decode path's threads (results
// do not depend on it); null: OpenMP.
void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_pos0, float scale,
               Tensor& out, Tensor* lse = nullptr, ThreadPool* pool = nullptr);

namespace cpu {
void attention(const AttentionParams& p);
void attention_reference(const AttentionParams& p);
}  // namespace cpu
namespace cuda {
void attention(const AttentionParams& p);
}

}  // namespace ic::ops
