#pragma once
// Teacher targets for indexer distillation (INDEXCACHE.md, "Indexer training signal"): the
// layer's causal attention distribution averaged over its query heads,
//   p[t, s] = mean_h softmax_s(q[t, h] . k[s, g(h)] / sqrt(head_dim)),  s <= t,
// L1-normalised per row, zero for s > t. GQA: query head h reads KV head g(h) = h / (Hq / Hkv).
// Positions are the row indices 0..n-1 (q and k already carry RoPE).
#include <span>

#include "core/tensor.h"

namespace ic {

// q: F32 [n, n_heads, head_dim], k: F32 [n, n_kv_heads, head_dim] (n_heads % n_kv_heads == 0),
// both post-RoPE, on the host. Returns F32 [n, n]. Rows are split over OpenMP threads; each row
// is computed by one thread in a fixed order, so the result is bitwise independent of the
// thread count.
Tensor attention_targets(const Tensor& q, const Tensor& k);
// Same in double, one plain loop per quantity; rounded to F32 once at the end.
Tensor attention_targets_reference(const Tensor& q, const Tensor& k);

// The multi-layer distillation target p_bar = (1/m) sum_j p_j of the layers an F layer serves
// (all F32 [n, n], same n). Throws ic::Error on an empty list or mismatched shapes.
Tensor mean_targets(std::span<const Tensor> targets);

}  // namespace ic
