#pragma once
// Small elementwise and copy operations the model needs between the big ones.
#include "core/tensor.h"

namespace ic::ops {

struct AddParams {
  float* a;        // [n], receives a + b
  const float* b;  // [n]
  int64_t n;
};

struct KvStoreParams {
  const float* src;  // [n_tok, n_kv_heads, head_dim]
  float* cache;      // [n_kv_heads, capacity, head_dim]; rows pos0 .. pos0+n_tok are written
  int64_t n_tok, n_kv_heads, head_dim, capacity, pos0;
};

// a += b (F32, same shape, same device).
void add_inplace(Tensor& a, const Tensor& b);
// Append n_tok keys or values at positions pos0.. of a head-major cache.
void kv_store(const Tensor& src, Tensor& cache, int64_t pos0);

namespace cpu {
void add_inplace(const AddParams& p);
void kv_store(const KvStoreParams& p);
}  // namespace cpu
namespace cuda {
void add_inplace(const AddParams& p);
void kv_store(const KvStoreParams& p);
}  // namespace cuda

}  // namespace ic::ops
