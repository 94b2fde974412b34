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

// Helpers on GCC vectors must be inlined into each target clone: called out of line, a 64-byte
// vector would cross between functions compiled for different instruction sets.
#define IC_INLINE inline __attribute__((always_inline))

namespace ic::ops {

constexpr int kLanes = 16;

// sum_j a[j] * b[j] with 16 explicit partial sums (vectorises to one zmm or two ymm).
IC_INLINE float dot_f32(const float* a, const float* b, int64_t n) {
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
#include <type_traits>

namespace ic::ops {

// exp(x) for float, branch-free so loops over it vectorise. Range reduction x = n ln2 + r with
// |r| <= ln2/2 (ln2 split in two parts so n*ln2 is exact), then a degree-6 Taylor polynomial:
// truncation error < (ln2/2)^7/7! ~ 1.3e-7 relative, about 1 ulp on top of rounding. n is
// rounded to nearest by adding 1.5 * 2^23 (exact for |n| < 2^22), which needs no libm call.
// Inputs below -87.3 give 0 (exp underflows there anyway); above 88.7 clamp.
template <typename F, typename I>
IC_INLINE F exp_fast_impl(F x) {
  x = x < -87.3f ? F{} + -87.3f : x;
  x = x > 88.7f ? F{} + 88.7f : x;
  const F n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  F p = F{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  if constexpr (std::is_same_v<F, float>) {
    const I bits = (static_cast<I>(n) + 127) << 23;
    return x <= -87.3f ? 0.0f : p * std::bit_cast<float>(bits);
  } else {
    const I bits = (__builtin_convertvector(n, I) + 127) << 23;
    const F y = p * std::bit_cast<F>(bits);
    return x <= -87.3f ? F{} : y;
  }
}

IC_INLINE float exp_fast(float x) { return exp_fast_impl<float, int32_t>(x); }

// 16 floats as one GCC vector: one zmm on AVX-512, two ymm on AVX2, four xmm otherwise; the
// target_clones of a kernel decide. Used where auto-vectorisation of short fixed loops fails.
// Arithmetic on v16f lowers well everywhere, but GCC (12) lowers a 64-byte vector's compares,
// selects and conversions lane by lane when the target has no 64-byte registers (AVX2): those
// go through two 8-lane halves (v8f), which every target handles with whole registers. Each
// lane's arithmetic is the same either way, so the results are the same bits.
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

IC_INLINE v16f load16(const float* p) {
  v16f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
IC_INLINE void store16(float* p, v16f v) { __builtin_memcpy(p, &v, sizeof v); }
IC_INLINE v8f half(v16f v, int i) {
  v8f h;
  __builtin_memcpy(&h, reinterpret_cast<const char*>(&v) + 32 * i, sizeof h);
  return h;
}
IC_INLINE v16f join(v8f lo, v8f hi) {
  v16f v;
  __builtin_memcpy(&v, &lo, sizeof lo);
  __builtin_memcpy(reinterpret_cast<char*>(&v) + 32, &hi, sizeof hi);
  return v;
}
IC_INLINE v16f exp_fast(v16f x) {
  return join(exp_fast_impl<v8f, v8i>(half(x, 0)), exp_fast_impl<v8f, v8i>(half(x, 1)));
}
// Lanes 0 .. n-1 of v, the others `fill` (n in [0, 16]).
IC_INLINE v16f keep_first(v16f v, int32_t n, float fill) {
  const v8i lo = {0, 1, 2, 3, 4, 5, 6, 7}, hi = {8, 9, 10, 11, 12, 13, 14, 15};
  const v8f f = v8f{} + fill;
  return join(lo < n ? half(v, 0) : f, hi < n ? half(v, 1) : f);
}
IC_INLINE float hmax(v16f v) {
  const v8f a = half(v, 0), b = half(v, 1);
  const v8f m8 = b > a ? b : a;
  float m = m8[0];
  for (int i = 1; i < 8; ++i) m = m8[i] > m ? m8[i] : m;
  return m;
}
IC_INLINE float hsum(v16f v) {  // fixed pairwise order
  for (int w = 8; w > 0; w /= 2)
    for (int i = 0; i < w; ++i) v[i] += v[i + w];
  return v[0];
}

// Kernels that keep 16-lane vectors live in loops are written once over a vector type V and
// compiled twice: V = v16f in a function built for AVX-512 (one zmm), V = f32x16 (two v8f) for
// AVX2 and baseline. GCC has no register mode for a 64-byte vector without AVX-512 and keeps a
// v16f accumulator in memory there, reloading it in pieces on every step; a pair of v8f stays
// in two ymm registers. The helpers below take either type; each lane's arithmetic is the same,
// so both types give the same bits. Dispatch: ops/simd_dispatch.h.
struct f32x16 {
  v8f lo, hi;
};
IC_INLINE f32x16 operator+(f32x16 a, f32x16 b) { return {a.lo + b.lo, a.hi + b.hi}; }
IC_INLINE f32x16 operator-(f32x16 a, float b) { return {a.lo - b, a.hi - b}; }
IC_INLINE f32x16 operator*(f32x16 a, float b) { return {a.lo * b, a.hi * b}; }
IC_INLINE f32x16 operator*(float a, f32x16 b) { return {a * b.lo, a * b.hi}; }
IC_INLINE f32x16 operator*(f32x16 a, f32x16 b) { return {a.lo * b.lo, a.hi * b.hi}; }
IC_INLINE f32x16& operator+=(f32x16& a, f32x16 b) { return a = a + b; }

template <class V>
IC_INLINE V vload(const float* p) {
  if constexpr (std::is_same_v<V, v16f>) {
    return load16(p);
  } else {
    f32x16 v;
    __builtin_memcpy(&v.lo, p, sizeof v.lo);
    __builtin_memcpy(&v.hi, p + 8, sizeof v.hi);
    return v;
  }
}
IC_INLINE void vstore(float* p, v16f v) { store16(p, v); }
IC_INLINE void vstore(float* p, f32x16 v) {
  __builtin_memcpy(p, &v.lo, sizeof v.lo);
  __builtin_memcpy(p + 8, &v.hi, sizeof v.hi);
}
IC_INLINE f32x16 exp_fast(f32x16 x) { return {exp_fast_impl<v8f, v8i>(x.lo), exp_fast_impl<v8f, v8i>(x.hi)}; }
IC_INLINE f32x16 keep_first(f32x16 v, int32_t n, float fill) {
  const v8i lo = {0, 1, 2, 3, 4, 5, 6, 7}, hi = {8, 9, 10, 11, 12, 13, 14, 15};
  const v8f f = v8f{} + fill;
  return {lo < n ? v.lo : f, hi < n ? v.hi : f};
}
IC_INLINE float hmax(f32x16 v) {
  const v8f m8 = v.hi > v.lo ? v.hi : v.lo;
  float m = m8[0];
  for (int i = 1; i < 8; ++i) m = m8[i] > m ? m8[i] : m;
  return m;
}
IC_INLINE float hsum(f32x16 v) {  // the same pairwise order as hsum(v16f)
  v8f s = v.lo + v.hi;
  for (int w = 4; w > 0; w /= 2)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  return s[0];
}
// Lanes of x where a > 0, zero elsewhere (the ReLU's gate).
IC_INLINE v16f where_positive(v16f a, v16f x) { return a > 0.0f ? x : v16f{}; }
IC_INLINE f32x16 where_positive(f32x16 a, f32x16 x) { return {a.lo > 0.0f ? x.lo : v8f{}, a.hi > 0.0f ? x.hi : v8f{}}; }
IC_INLINE float lane(v16f v, int64_t j) { return v[j]; }
IC_INLINE float lane(f32x16 v, int64_t j) { return j < 8 ? v.lo[j] : v.hi[j - 8]; }

}  // namespace ic::ops
