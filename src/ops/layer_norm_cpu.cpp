#include <cmath>

#include "ops/layer_norm.h"

namespace ic::ops::cpu {

void layer_norm(const LayerNormParams& p) {
#pragma omp parallel for schedule(static) if (p.n_rows > 64)
  for (int64_t i = 0; i < p.n_rows; ++i) {
    const float* x = p.x + i * p.dim;
    float* o = p.out + i * p.dim;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < p.dim; ++c) mean += x[c];
    mean /= static_cast<double>(p.dim);
    for (int64_t c = 0; c < p.dim; ++c) var += (x[c] - mean) * (x[c] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(p.dim) + p.eps);
    for (int64_t c = 0; c < p.dim; ++c) o[c] = static_cast<float>((x[c] - mean) * inv) * p.weight[c] + p.bias[c];
  }
}

}  // namespace ic::ops::cpu
