#pragma once
// Small elementwise and copy operations the model needs between the big ones.
#include <cstdint>

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

struct ToBf16Params {
  const float* src;  // [n]
  uint16_t* dst;     // [n] bf16 bits, round to nearest even (NaN stays NaN)
  int64_t n;
};

// dst = bf16(src): F32 -> BF16, same shape, same device.
void to_bf16(const Tensor& src, Tensor& dst);

// a += b (F32, same shape, same device).
void add_inplace(Tensor& a, const Tensor& b);
// Append n_tok keys or values at positions pos0.. of a head-major cache.
void kv_store(const Tensor& src, Tensor& cache, int64_t pos0);

namespace cpu {
void to_bf16(const ToBf16Params& p);
void add_inplace(const AddParams& p);
void kv_store(const KvStoreParams& p);
}  // namespace cpu
namespace cuda {
void to_bf16(const ToBf16Params& p);
void add_inplace(const AddParams& p);
void kv_store(const KvStoreParams& p);
}  // namespace cuda

}  // namespace ic::ops
