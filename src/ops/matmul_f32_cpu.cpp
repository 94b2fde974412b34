#include "ops/matmul_f32.h"
#include "ops/simd.h"

namespace ic::ops::cpu {

void matmul_f32_reference(const MatmulF32Params& p) {
  for (int64_t t = 0; t < p.n; ++t)
    for (int64_t o = 0; o < p.n_out; ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < p.n_in; ++i) acc += static_cast<double>(p.x[t * p.n_in + i]) * p.w[o * p.n_in + i];
      p.y[t * p.n_out + o] = static_cast<float>(acc);
    }
}

// Each output is one dot product with a fixed 16-lane split, so results do not depend on the
// thread count; rows of W stay in cache across the tokens of a block.
IC_SIMD_CLONES
void matmul_f32(const MatmulF32Params& p) {
  constexpr int64_t kTokBlock = 16;
#pragma omp parallel for collapse(2) schedule(static) if (p.n * p.n_out * p.n_in > (1 << 20))
  for (int64_t t0 = 0; t0 < p.n; t0 += kTokBlock)
    for (int64_t o = 0; o < p.n_out; ++o) {
      const int64_t t1 = t0 + kTokBlock < p.n ? t0 + kTokBlock : p.n;
      for (int64_t t = t0; t < t1; ++t) p.y[t * p.n_out + o] = dot_f32(p.x + t * p.n_in, p.w + o * p.n_in, p.n_in);
    }
}

}  // namespace ic::ops::cpu
