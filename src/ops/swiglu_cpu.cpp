#include <cmath>

#include "ops/simd.h"
#include "ops/swiglu.h"

namespace ic::ops::cpu {

void swiglu_reference(const SwigluParams& p) {
  for (int64_t i = 0; i < p.n; ++i) {
    const double g = p.gate[i];
    p.out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * p.up[i]);
  }
}

IC_SIMD_CLONES
void swiglu(const SwigluParams& p) {
#pragma omp parallel for schedule(static) if (p.n > 65536)
  for (int64_t i = 0; i < p.n; ++i) {
    const float g = p.gate[i];
    p.out[i] = g / (1.0f + exp_fast(-g)) * p.up[i];
  }
}

}  // namespace ic::ops::cpu
