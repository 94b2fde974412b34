#pragma once
// LayerNorm with scale and bias (the lightning indexer's key norm):
//   out[i, :] = (x[i, :] - mean) / sqrt(var + eps) * weight + bias,
// mean and (biased) var over the row's dim values.
#include "core/tensor.h"

namespace ic::ops {

struct LayerNormParams {
  const float* x;       // [n_rows, dim]
  const float* weight;  // [dim]
  const float* bias;    // [dim]
  float* out;           // [n_rows, dim]; may alias x
  int64_t n_rows;
  int64_t dim;
  float eps;
};

// x, out: F32 [n_rows, dim] (out may be x); weight, bias: F32 [dim]; all on one device.
void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, Tensor& out);

namespace cpu {
// Mean and variance in double (two passes): the indexer's keys feed every score of a row.
void layer_norm(const LayerNormParams& p);
}  // namespace cpu
namespace cuda {
void layer_norm(const LayerNormParams& p);
}

}  // namespace ic::ops
