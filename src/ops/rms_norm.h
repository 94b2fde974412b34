#pragma once
// RMSNorm: out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight.
#include "core/tensor.h"

namespace ic::ops {

struct RmsNormParams {
  const float* x;       // [n_rows, dim]
  const float* weight;  // [dim]
  float* out;           // [n_rows, dim]; may alias x
  int64_t n_rows;
  int64_t dim;
  float eps;
};

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

namespace cpu {
void rms_norm(const RmsNormParams& p);
void rms_norm_reference(const RmsNormParams& p);
}  // namespace cpu
namespace cuda {
void rms_norm(const RmsNormParams& p);
}

}  // namespace ic::ops
