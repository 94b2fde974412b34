#pragma once
// Sparse attention of DSA: each query attends only to the keys its index list selects.
//   out[t, h] = sum_{s in T_t} softmax_s(scale * q[t, h] . k[s, g]) v[s, g],
//   g = h / (n_heads / n_kv_heads),
// where T_t is row t of topk with -1 entries skipped; all query heads of a token share the
// one list (as DSA does within a layer). Entries may come in any order; each entry is one
// term, so a duplicated index counts twice (top-k output never repeats one). An index past
// the query's own position q_pos0 + t is an error. A query with no valid entry outputs zeros
// and an LSE of -inf (the empty sum). With every causal position selected this is dense
// ops::attention.
//
// The key/value cache may be F32 (what the model stores today) or BF16 (half the bytes the
// gather moves); scores, softmax and the weighted sum are f32 either way.
//
// On CUDA the indices are not checked against the query's position (that would cost a
// device-to-host copy per call): an index in [0, kv_capacity) is attended whatever the query's
// position, and one outside [0, kv_capacity) is skipped like -1, so the kernel never reads
// outside the cache. Validate on the CPU (ops::cpu::sparse_attention) where that matters.
#include <cstdint>

#include "core/tensor.h"

namespace ic {
class ThreadPool;
}

namespace ic::ops {

struct SparseAttentionParams {
  const float* q;       // [n_q, n_heads, head_dim]
  const float* k;       // [n_kv_heads, kv_capacity, head_dim], as in ops::attention; null when bf16
  const float* v;       // [n_kv_heads, kv_capacity, head_dim]; null when bf16
  const int32_t* topk;  // [n_q, topk_k]; -1 = no token, else in [0, q_pos0 + t]
  float* out;           // [n_q, n_heads, head_dim]
  float* lse;           // [n_q, n_heads] natural-log sum of exp(scale * scores); may be null
  int64_t n_q;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t kv_capacity;
  int64_t q_pos0;
  int64_t topk_k;
  float scale;
  // A BF16 cache instead of k and v (same layout, raw bf16 bits): CUDA only.
  const uint16_t* k_bf16 = nullptr;  // [n_kv_heads, kv_capacity, head_dim]
  const uint16_t* v_bf16 = nullptr;  // [n_kv_heads, kv_capacity, head_dim]
  ThreadPool* pool = nullptr;        // CPU: (token, KV head) items on it instead of OpenMP
};

// q: F32 [n_q, n_heads, head_dim]; k, v: F32 or BF16 (both the same) [n_kv_heads, capacity,
// head_dim] (the CPU widens a BF16 cache to f32 first);
// topk: I32 [n_q, k]; out like q; lse: F32 [n_q, n_heads] or an undefined Tensor.
// pool: the CPU decode path's threads (results do not depend on it); null: OpenMP.
void sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& topk,
                      int64_t q_pos0, float scale, Tensor& out, Tensor* lse = nullptr,
                      ThreadPool* pool = nullptr);

namespace cpu {
// Both check every index first (throwing ic::Error on one that is < -1 or past its query).
void sparse_attention(const SparseAttentionParams& p);
void sparse_attention_reference(const SparseAttentionParams& p);
}  // namespace cpu
namespace cuda {
// head_dim 32, 64 or 128; 16-byte aligned q, k, v. Deterministic: the split of the index list
// over blocks depends only on the shapes.
void sparse_attention(const SparseAttentionParams& p);
}

}  // namespace ic::ops
