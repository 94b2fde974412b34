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

namespace ic::ops::detail {

// Same arithmetic as quantize_token_scalar, so the codes are bitwise identical.
bool quantize_token_avx2(const float* x, int64_t nb, int8_t* q, float* scale, float* ssum,
                         int32_t* sum) {
  const __m256 lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  bool finite = true;
  for (int64_t b = 0; b < nb; ++b) {
    __m256 xv[4];
    __m256 mx = _mm256_setzero_ps();
    const __m256 big = _mm256_set1_ps(3.40282347e38f);
    int ok = 0xff;  // ordered compares are false for NaN, so this catches inf and NaN
    for (int j = 0; j < 4; ++j) {
      xv[j] = _mm256_loadu_ps(x + 32 * b + 8 * j);
      const __m256 a = _mm256_and_ps(xv[j], absmask);
      ok &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ));
      mx = _mm256_max_ps(mx, a);
    }
    const bool block_finite = ok == 0xff;
    finite &= block_finite;
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float amax = _mm_cvtss_f32(m4);
    const float s = block_finite ? amax / 127.0f : 0.0f;
    int32_t acc = 0;
    if (s > 0.0f) {
      const __m256 inv = _mm256_set1_ps(127.0f / amax);
      __m256i iv[4];
      __m256i isum = _mm256_setzero_si256();
      for (int j = 0; j < 4; ++j) {
        __m256 v = _mm256_mul_ps(xv[j], inv);
        v = _mm256_min_ps(_mm256_max_ps(v, nlim), lim);
        v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
        iv[j] = _mm256_cvttps_epi32(v);
        isum = _mm256_add_epi32(isum, iv[j]);
      }
      // int32 -> int8 with saturating packs (values are in [-127, 127]), then undo the
      // lane interleave of the 256-bit packs.
      const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]);
      const __m256i p16b = _mm256_packs_epi32(iv[2], iv[3]);
      const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
      const __m256i ordered =
          _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256((__m256i*)(q + 32 * b), ordered);
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      acc = _mm_cvtsi128_si32(s4);
    } else {
      _mm256_storeu_si256((__m256i*)(q + 32 * b), _mm256_setzero_si256());
    }
    scale[b] = s;
    sum[b] = acc;
    ssum[b] = s * static_cast<float>(acc);
  }
  return finite;
}

}  // namespace ic::ops::detail
