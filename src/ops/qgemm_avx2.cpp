// AVX2 kernel of the quantised GEMM (vpmaddubsw + vpmaddwd). A ymm holds one half of a packed
// K-quad: 8 rows x 4 codes. The int32 dots are exact, so results match the other kernels
// bitwise (same f32 operations in the same order, see qgemm.h).
//  - 4-bit codes: vpmaddubsw(code, x) is at most 2 * 15 * 127 = 3810 per int16 lane, so the 8
//    quads of a block sum in int16 (<= 30480 < 2^15) before one vpmaddwd.
//  - 8-bit codes: code * x could reach 2 * 255 * 127 and saturate int16, so use the signed
//    code c = q - 128: vpmaddubsw(|c|, sign(x, c)) <= 2 * 128 * 127 = 32512, widened per quad,
//    and dot(q, x) = dot(c, x) + 128 * sum(x).
#include <immintrin.h>

#include <algorithm>

#include "ops/qgemm.h"
#include "ops/qgemm_kernels.h"

namespace ic::ops::detail {

namespace {

constexpr int kTileTokens = 4;

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Tokens [t0, t0+MT) x rows 8h..8h+7 of group g.
template <int BITS, int MT>
void tile(const QgemmArgs& a, int64_t g, int h, int64_t t0) {
  const int64_t n_in = a.nb * 32;
  const int64_t code_bytes = a.record_bytes - 64;
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc[MT];
  for (int t = 0; t < MT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* rec = a.w + (g * a.nb + b) * a.record_bytes + 32 * h;
    const int8_t* xb = a.xq + t0 * n_in + b * 32;  // [MT, n_in]
    __m256i dot[MT];
    if constexpr (BITS == 4) {
      __m256i p[MT];
      for (int t = 0; t < MT; ++t) p[t] = _mm256_setzero_si256();
      for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_load_si256((const __m256i*)(rec + 64 * k));
        const __m256i lo = _mm256_and_si256(v, nib);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
        for (int t = 0; t < MT; ++t) {
          p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(lo, bcast4(xb + t * n_in + 4 * k)));
          p[t] = _mm256_add_epi16(
              p[t], _mm256_maddubs_epi16(hi, bcast4(xb + t * n_in + 16 + 4 * k)));
        }
      }
      for (int t = 0; t < MT; ++t) dot[t] = _mm256_madd_epi16(p[t], ones16);
    } else {
      const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
      for (int t = 0; t < MT; ++t)
        dot[t] = _mm256_set1_epi32(128 * a.xsum[(t0 + t) * a.nb + b]);
      for (int k = 0; k < 8; ++k) {
        const __m256i c = _mm256_xor_si256(_mm256_load_si256((const __m256i*)(rec + 64 * k)),
                                           bias);  // q - 128 as int8
        const __m256i cabs = _mm256_abs_epi8(c);    // 0..128, read as unsigned
        for (int t = 0; t < MT; ++t) {
          const __m256i sx = _mm256_sign_epi8(bcast4(xb + t * n_in + 4 * k), c);
          dot[t] = _mm256_add_epi32(
              dot[t], _mm256_madd_epi16(_mm256_maddubs_epi16(cabs, sx), ones16));
        }
      }
    }
    const uint8_t* scales = a.w + (g * a.nb + b) * a.record_bytes + code_bytes + 16 * h;
    const __m256 d = _mm256_cvtph_ps(_mm_load_si128((const __m128i*)scales));
    const __m256 m = _mm256_cvtph_ps(_mm_load_si128((const __m128i*)(scales + 32)));
    for (int t = 0; t < MT; ++t) {
      const int64_t sb = (t0 + t) * a.nb + b;
      const __m256 ds = _mm256_mul_ps(d, _mm256_set1_ps(a.xs[sb]));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t]), ds, acc[t]);
      acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.xss[sb]), acc[t]);
    }
  }
  const int64_t row0 = g * 16 + 8 * h;
  const int64_t rows = std::clamp<int64_t>(a.n_out - row0, 0, 8);
  if (rows == 0) return;
  alignas(32) float tmp[8];
  for (int t = 0; t < MT; ++t) {
    float* dst = a.y + (t0 + t) * a.n_out + row0;
    if (rows == 8) {
      _mm256_storeu_ps(dst, acc[t]);
    } else {
      _mm256_store_ps(tmp, acc[t]);
      std::copy(tmp, tmp + rows, dst);
    }
  }
}

template <int BITS>
void run(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1) {
  for (int64_t g = g0; g < g1; ++g) {
    for (int h = 0; h < 2; ++h) {
      if (g * 16 + 8 * h >= a.n_out) break;  // all-padding half
      int64_t t = t0;
      for (; t + kTileTokens <= t1; t += kTileTokens) tile<BITS, kTileTokens>(a, g, h, t);
      switch (t1 - t) {
        case 1: tile<BITS, 1>(a, g, h, t); break;
        case 2: tile<BITS, 2>(a, g, h, t); break;
        case 3: tile<BITS, 3>(a, g, h, t); break;
        default: break;
      }
    }
  }
}

}  // namespace

void qgemm_avx2(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1) {
  if (a.code_bits == 4)
    run<4>(a, g0, g1, t0, t1);
  else
    run<8>(a, g0, g1, t0, t1);
}

}  // namespace ic::ops::detail
