#include "model/dsa_family/cpu_math.h"

#include <cmath>

#include "core/error.h"

namespace ic::dsa {

double dot(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

void linear(const float* x, int64_t n, const Tensor& w, const Tensor& b, float* y) {
  IC_ASSERT(w.defined() && w.rank() == 2 && w.dtype() == DType::F32);
  const int64_t out = w.dim(0), in = w.dim(1);
  IC_ASSERT(!b.defined() || b.numel() == out);
  const float* wd = w.data<float>();
  const float* bd = b.defined() ? b.data<float>() : nullptr;
#pragma omp parallel for collapse(2) schedule(static) if (n * out * in > (1 << 16))
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      const double v = dot(x + t * in, wd + o * in, in) + (bd ? bd[o] : 0.0f);
      y[t * out + o] = static_cast<float>(v);
    }
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  IC_ASSERT(x.rank() == 2 && x.dim(1) == w.dim(1));
  Tensor y = Tensor::empty({x.dim(0), w.dim(0)}, DType::F32);
  linear(x.data<float>(), x.dim(0), w, b, y.data<float>());
  return y;
}

void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t stride, const Tensor& weight, double eps,
              float* out, int64_t out_stride) {
  IC_ASSERT(weight.numel() == dim);
  const float* w = weight.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride;
    const double ms = dot(xr, xr, dim) / static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(ms + eps);
    float* o = out + r * out_stride;
    for (int64_t i = 0; i < dim; ++i) o[i] = static_cast<float>(xr[i] * inv * w[i]);
  }
}

void layer_norm(float* x, int64_t rows, int64_t dim, const Tensor& weight, const Tensor& bias, double eps) {
  IC_ASSERT(weight.numel() == dim && bias.numel() == dim);
  const float* w = weight.data<float>();
  const float* b = bias.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * dim;
    double mean = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<double>(dim);
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) xr[i] = static_cast<float>((xr[i] - mean) * inv * w[i] + b[i]);
  }
}

}  // namespace ic::dsa
