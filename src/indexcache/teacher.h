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
// both post-RoPE, both on the host or both on the GPU. Returns F32 [n, n] on their device.
// Host: rows are split over OpenMP threads; each row is computed by one thread in a fixed
// order, so the result is bitwise independent of the thread count. GPU (teacher_cuda.cu):
// logits by cuBLAS (f32, no TF32) for blocks of rows, one CUDA block per row for the softmaxes
// and the head mean in a fixed order (deterministic); device memory 4 R n H bytes besides p,
// R = rows per block (the largest with R n H 4 B <= 1 GiB).
Tensor attention_targets(const Tensor& q, const Tensor& k);
// Same in double, one plain loop per quantity; rounded to F32 once at the end.
Tensor attention_targets_reference(const Tensor& q, const Tensor& k);

// The multi-layer distillation target p_bar = (1/m) sum_j p_j of the layers an F layer serves
// (all F32 [n, n], same n, same device; the result is on it). Throws ic::Error on an empty list,
// mismatched shapes or devices. Host and GPU give the same bits (the same sums in the same order).
Tensor mean_targets(std::span<const Tensor> targets);

namespace teacher_detail {
// The GPU halves of the two functions above (teacher_cuda.cu; a CPU build throws). Arguments
// are checked by the fronts.
Tensor attention_targets_cuda(const Tensor& q, const Tensor& k);
void mean_targets_cuda(std::span<const Tensor> targets, Tensor& out);
}  // namespace teacher_detail

}  // namespace ic
