#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/moe_experts.h"

namespace ic::ops::cpu {

void moe_experts_reference(const MoeExpertsParams& p) {
  for (int64_t i = 0; i < p.n_tok * p.top_k; ++i)
    IC_CHECK(p.ids[i] >= 0 && p.ids[i] < p.n_experts, "moe_experts: token {} slot {} names expert {}, outside [0, {})",
             i / p.top_k, i % p.top_k, p.ids[i], p.n_experts);
  const int64_t D = p.dim, I = p.inter;
#pragma omp parallel for schedule(dynamic) if (p.n_tok > 1)
  for (int64_t t = 0; t < p.n_tok; ++t) {
    std::vector<double> x(D), act(I), y(D, 0.0);
    for (int64_t k = 0; k < D; ++k) x[k] = bf16_to_f32(p.x[t * D + k]);
    for (int64_t s = 0; s < p.top_k; ++s) {
      const int64_t e = p.ids[t * p.top_k + s];
      const uint16_t* wg = p.w_gate_up + e * 2 * I * D;
      const uint16_t* wd = p.w_down + e * D * I;
      for (int64_t j = 0; j < I; ++j) {
        double g = 0.0, u = 0.0;
        for (int64_t k = 0; k < D; ++k) {
          g += x[k] * bf16_to_f32(wg[j * D + k]);
          u += x[k] * bf16_to_f32(wg[(I + j) * D + k]);
        }
        act[j] = g / (1.0 + std::exp(-g)) * u;
      }
      const double w = p.weights[t * p.top_k + s];
      for (int64_t o = 0; o < D; ++o) {
        double d = 0.0;
        for (int64_t j = 0; j < I; ++j) d += act[j] * bf16_to_f32(wd[o * I + j]);
        y[o] += w * d;
      }
    }
    for (int64_t o = 0; o < D; ++o) {
      if (p.out_type == DType::F32)
        static_cast<float*>(p.out)[t * D + o] = static_cast<float>(y[o]);
      else
        static_cast<uint16_t*>(p.out)[t * D + o] = f32_to_bf16(static_cast<float>(y[o]));
    }
  }
}

}  // namespace ic::ops::cpu
