#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/sparse_mla.h"

namespace ic::ops::cpu {
namespace {

// Serial, before any parallel region, so a bad index surfaces as an ic::Error.
void check_indices(const SparseMlaParams& p) {
  for (int64_t t = 0; t < p.n_q; ++t)
    for (int64_t i = 0; i < p.topk_k; ++i) {
      const int32_t s = p.indices[t * p.topk_k + i];
      IC_CHECK(s >= -1 && s < p.n_kv, "sparse_mla: query {} selects row {} in entry {}; indices must be -1 or in [0, {})",
               t, s, i, p.n_kv);
    }
}

// One token, every head: scores in double, softmax in double, weighted sum in double.
void attend_token(const SparseMlaParams& p, int64_t t, std::vector<double>& s) {
  const int32_t* idx = p.indices + t * p.topk_k;
  s.assign(static_cast<size_t>(p.topk_k), 0.0);
  for (int64_t h = 0; h < p.n_heads; ++h) {
    const uint16_t* q = p.q + (t * p.n_heads + h) * kMlaDimQK;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < p.topk_k; ++i) {
      if (idx[i] < 0) continue;
      const uint16_t* row = p.kv + static_cast<int64_t>(idx[i]) * kMlaDimQK;
      double acc = 0.0;
      for (int64_t c = 0; c < kMlaDimQK; ++c) acc += double(bf16_to_f32(q[c])) * bf16_to_f32(row[c]);
      s[i] = acc * p.scale;
      mx = std::max(mx, s[i]);
    }
    double sum = 0.0;
    for (int64_t i = 0; i < p.topk_k; ++i)
      if (idx[i] >= 0) sum += (s[i] = std::exp(s[i] - mx));
    float* o = p.out + (t * p.n_heads + h) * kMlaDimV;
    for (int64_t c = 0; c < kMlaDimV; ++c) {
      double acc = 0.0;
      for (int64_t i = 0; i < p.topk_k; ++i)
        if (idx[i] >= 0) acc += s[i] * bf16_to_f32(p.kv[static_cast<int64_t>(idx[i]) * kMlaDimQK + c]);
      o[c] = sum > 0.0 ? static_cast<float>(acc / sum) : 0.0f;
    }
    if (p.lse)
      p.lse[t * p.n_heads + h] =
          sum > 0.0 ? static_cast<float>(mx + std::log(sum)) : -std::numeric_limits<float>::infinity();
  }
}

}  // namespace

void sparse_mla_reference(const SparseMlaParams& p) {
  check_indices(p);
  std::vector<double> s;
  for (int64_t t = 0; t < p.n_q; ++t) attend_token(p, t, s);
}

void sparse_mla(const SparseMlaParams& p) {
  check_indices(p);
#pragma omp parallel
  {
    std::vector<double> s;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < p.n_q; ++t) attend_token(p, t, s);
  }
}

}  // namespace ic::ops::cpu
