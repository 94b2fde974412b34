#include <cmath>

#include "ops/rms_norm.h"
#include "ops/simd.h"

namespace ic::ops::cpu {

void rms_norm_reference(const RmsNormParams& p) {
  for (int64_t i = 0; i < p.n_rows; ++i) {
    const float* x = p.x + i * p.dim;
    double ss = 0.0;
    for (int64_t j = 0; j < p.dim; ++j) ss += static_cast<double>(x[j]) * x[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / p.dim + p.eps));
    for (int64_t j = 0; j < p.dim; ++j) p.out[i * p.dim + j] = x[j] * inv * p.weight[j];
  }
}

IC_SIMD_CLONES
void rms_norm(const RmsNormParams& p) {
#pragma omp parallel for schedule(static) if (p.n_rows > 16)
  for (int64_t i = 0; i < p.n_rows; ++i) {
    const float* x = p.x + i * p.dim;
    const float ss = sum_squares(x, p.dim);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(p.dim) + p.eps);
    float* o = p.out + i * p.dim;
    for (int64_t j = 0; j < p.dim; ++j) o[j] = x[j] * inv * p.weight[j];
  }
}

}  // namespace ic::ops::cpu
