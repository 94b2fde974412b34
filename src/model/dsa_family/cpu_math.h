#pragma once
// The few dense kernels of the DSA family's CPU reference path: f32 storage, double
// accumulation, parallel over output rows. Plain on purpose: this path is the one the GPU path
// and every test are checked against, so it stays obvious rather than fast.
#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace ic::dsa {

// Dot product of n floats, accumulated in double.
double dot(const float* a, const float* b, int64_t n);

// y[n, out] = x[n, in] . w^T + b. w: F32 [out, in]; b: F32 [out] or an undefined Tensor.
void linear(const float* x, int64_t n, const Tensor& w, const Tensor& b, float* y);
// The same on tensors: x F32 [n, in] -> a new F32 [n, out].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// HF's RMSNorm: x / sqrt(mean(x^2) + eps) * weight, per row of dim values (row stride `stride`).
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t stride, const Tensor& weight, double eps,
              float* out, int64_t out_stride);
// torch.nn.LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias (biased variance), in place.
void layer_norm(float* x, int64_t rows, int64_t dim, const Tensor& weight, const Tensor& bias, double eps);

inline double silu(double v) { return v / (1.0 + std::exp(-v)); }

}  // namespace ic::dsa
