#include <vector>

#include "core/dtype.h"
#include "ops/gemm_bf16.h"

namespace ic::ops::cpu {

namespace {

void one_product(const GemmBf16Params& p) {
  // Widen W once: every row of x reads all of it.
  std::vector<double> w(static_cast<size_t>(p.out * p.in));
  for (size_t i = 0; i < w.size(); ++i) w[i] = bf16_to_f32(p.w[i]);
#pragma omp parallel for schedule(static) if (p.n * p.out * p.in > (1 << 22))
  for (int64_t r = 0; r < p.n; ++r) {
    std::vector<double> x(static_cast<size_t>(p.in));
    for (int64_t k = 0; k < p.in; ++k) x[k] = bf16_to_f32(p.x[r * p.in + k]);
    for (int64_t o = 0; o < p.out; ++o) {
      const double* wr = w.data() + o * p.in;
      double s = 0.0;
      for (int64_t k = 0; k < p.in; ++k) s += x[k] * wr[k];
      const int64_t i = r * p.out + o;
      if (p.y_type == DType::F32) {
        float* y = static_cast<float*>(p.y);
        y[i] = static_cast<float>(p.accumulate ? s + y[i] : s);
      } else {
        uint16_t* y = static_cast<uint16_t*>(p.y);
        // The sum reaches f32 first, as on the GPU, then bf16: the reference rounds the way the
        // kernel's output does, so tests compare against one rounding, not two different ones.
        y[i] = f32_to_bf16(static_cast<float>(p.accumulate ? s + bf16_to_f32(y[i]) : s));
      }
    }
  }
}

}  // namespace

void gemm_bf16_reference(const GemmBf16Params& p) {
  const int64_t ysize = p.y_type == DType::F32 ? 4 : 2;
  for (int64_t b = 0; b < p.batch; ++b) {
    GemmBf16Params q = p;
    q.batch = 1;
    q.x = p.x + b * p.stride_x;
    q.w = p.w + b * p.stride_w;
    q.y = static_cast<char*>(p.y) + b * p.stride_y * ysize;
    one_product(q);
  }
}

}  // namespace ic::ops::cpu
