#pragma once
// Small vectorisable helpers for the CPU kernels. IC_SIMD_CLONES compiles a function for
// AVX-512, AVX2 and baseline x86-64 and picks one at load time (GCC target_clones), so the
// library runs anywhere and still uses the wide units here. Reductions use a fixed split
// into 16 partial sums, so the summation order is explicit rather than left to the compiler.
#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define IC_SIMD_CLONES
#endif

namespace ic::ops {

constexpr int kLanes = 16;

// sum_j a[j] * b[j] with 16 explicit partial sums (vectorises to one zmm or two ymm).
inline float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += a[j] * b[j];
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

inline float sum_squares(const float* a, int64_t n) { return dot_f32(a, a, n); }

}  // namespace ic::ops

#include <bit>

namespace ic::ops {

// exp(x) for float, branch-free so loops over it vectorise. Range reduction x = n ln2 + r with
// |r| <= ln2/2 (ln2 split in two parts so n*ln2 is exact), then a degree-6 Taylor polynomial:
// truncation error < (ln2/2)^7/7! ~ 1.3e-7 relative, about 1 ulp on top of rounding.
// Inputs below -87.3 flush to 0 (exp underflows there anyway); above 88.7 clamp to FLT_MAX range.
inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float n = __builtin_roundf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  const float scale = std::bit_cast<float>(bits);
  const float y = p * scale;
  return x <= -87.3f ? 0.0f : y;
}

}  // namespace ic::ops
