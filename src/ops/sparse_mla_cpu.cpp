#include <algorithm>
#include <cmath>
#include <cstring>
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

// An fp8 cache as its dequantised bf16 copy (in `store`), so the bf16 code below is the only one.
SparseMlaParams with_bf16_cache(const SparseMlaParams& p, std::vector<uint16_t>& store) {
  if (!p.kv_fp8) return p;
  store.resize(static_cast<size_t>(p.n_kv * kMlaDimQK));
  for (int64_t r = 0; r < p.n_kv; ++r) dequantize_mla_fp8(p.kv_fp8 + r * kMlaFp8RowBytes, store.data() + r * kMlaDimQK);
  SparseMlaParams b = p;
  b.kv = store.data();
  b.kv_fp8 = nullptr;
  return b;
}

}  // namespace

void sparse_mla_reference(const SparseMlaParams& p_in) {
  check_indices(p_in);
  std::vector<uint16_t> store;
  const SparseMlaParams p = with_bf16_cache(p_in, store);
  std::vector<double> s;
  for (int64_t t = 0; t < p.n_q; ++t) attend_token(p, t, s);
}

void sparse_mla(const SparseMlaParams& p_in) {
  check_indices(p_in);
  std::vector<uint16_t> store;
  const SparseMlaParams p = with_bf16_cache(p_in, store);
#pragma omp parallel
  {
    std::vector<double> s;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < p.n_q; ++t) attend_token(p, t, s);
  }
}

}  // namespace ic::ops::cpu

namespace ic::ops {

void quantize_mla_fp8(const uint16_t* row_bf16, uint8_t* row_fp8) {
  float scales[4];
  for (int b = 0; b < 4; ++b) {
    float mx = 0.0f;
    for (int c = 0; c < 128; ++c) mx = std::max(mx, std::fabs(bf16_to_f32(row_bf16[128 * b + c])));
    scales[b] = mx > 0.0f ? mx / 448.0f : 1.0f;
    for (int c = 0; c < 128; ++c) row_fp8[128 * b + c] = f32_to_f8e4m3(bf16_to_f32(row_bf16[128 * b + c]) / scales[b]);
  }
  std::memcpy(row_fp8 + 512, scales, sizeof scales);
  std::memcpy(row_fp8 + 528, row_bf16 + 512, 64 * sizeof(uint16_t));
}

void dequantize_mla_fp8(const uint8_t* row_fp8, uint16_t* row_bf16) {
  float scales[4];
  std::memcpy(scales, row_fp8 + 512, sizeof scales);
  for (int c = 0; c < 512; ++c) row_bf16[c] = f32_to_bf16(f8e4m3_to_f32(row_fp8[c]) * scales[c / 128]);
  std::memcpy(row_bf16 + 512, row_fp8 + 528, 64 * sizeof(uint16_t));
}

}  // namespace ic::ops
