#pragma once
// y = x @ W^T in plain f32 for small weights kept exact (indexer projections, whose outputs pick
// the top-k and so should not carry the int8 rounding of the big layers).
#include "core/tensor.h"

namespace ic::ops {

struct MatmulF32Params {
  const float* x;  // [n, n_in]
  const float* w;  // [n_out, n_in]
  float* y;        // [n, n_out]
  int64_t n, n_in, n_out;
};

// x: F32 [n, n_in]; w: F32 [n_out, n_in]; y: F32 [n, n_out]; one device.
void matmul_f32(const Tensor& x, const Tensor& w, Tensor& y);

namespace cpu {
void matmul_f32(const MatmulF32Params& p);
void matmul_f32_reference(const MatmulF32Params& p);
}  // namespace cpu
namespace cuda {
void matmul_f32(const MatmulF32Params& p);
}

}  // namespace ic::ops
