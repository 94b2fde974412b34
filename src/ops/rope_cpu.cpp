#include <cmath>
#include <vector>

#include "ops/rope.h"

namespace ic::ops::cpu {

namespace {
// Index of the two elements of pair i.
inline void pair_index(RopeStyle style, int64_t i, int64_t rot_dim, int64_t* a, int64_t* b) {
  if (style == RopeStyle::kAdjacent) {
    *a = 2 * i;
    *b = 2 * i + 1;
  } else {
    *a = i;
    *b = i + rot_dim / 2;
  }
}
}  // namespace

void rope_reference(const RopeParams& p) {
  const int64_t half = p.rot_dim / 2;
  for (int64_t t = 0; t < p.n_tok; ++t)
    for (int64_t h = 0; h < p.n_heads; ++h) {
      float* x = p.x + t * p.row_stride + h * p.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = p.pos[t] * std::pow(static_cast<double>(p.theta_base),
                                                 -2.0 * static_cast<double>(i) / p.rot_dim);
        int64_t a, b;
        pair_index(p.style, i, p.rot_dim, &a, &b);
        const double c = std::cos(angle), s = std::sin(angle);
        const double xa = x[a], xb = x[b];
        x[a] = static_cast<float>(xa * c - xb * s);
        x[b] = static_cast<float>(xa * s + xb * c);
      }
    }
}

// Angles in double (positions reach 10^5 and beyond, where a float angle loses ~1e-2 rad),
// computed once per token and shared by every head.
void rope(const RopeParams& p) {
  const int64_t half = p.rot_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = std::pow(static_cast<double>(p.theta_base), -2.0 * static_cast<double>(i) / p.rot_dim);
#pragma omp parallel if (p.n_tok > 8)
  {
    std::vector<float> cs(static_cast<size_t>(2 * half));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.n_tok; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = p.pos[t] * inv_freq[i];
        cs[2 * i] = static_cast<float>(std::cos(angle));
        cs[2 * i + 1] = static_cast<float>(std::sin(angle));
      }
      for (int64_t h = 0; h < p.n_heads; ++h) {
        float* x = p.x + t * p.row_stride + h * p.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          int64_t a, b;
          pair_index(p.style, i, p.rot_dim, &a, &b);
          const float c = cs[2 * i], s = cs[2 * i + 1];
          const float xa = x[a], xb = x[b];
          x[a] = xa * c - xb * s;
          x[b] = xa * s + xb * c;
        }
      }
    }
  }
}

}  // namespace ic::ops::cpu
