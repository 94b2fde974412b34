// AVX-512 VNNI kernel of the quantised GEMM. One vpdpbusd multiplies 16 rows x 4 codes (one
// 64-byte K-quad of a packed record) by 4 int8 activations broadcast from memory, so a
// register tile of MT tokens x NG groups of 16 rows does MT * NG vpdpbusd per weight load.
// Per block and tile row the int32 dot is exact (|dot| <= 32 * 255 * 127 < 2^24, so its float
// conversion is exact too); it is then scaled in f32 in the order qgemm.h specifies.
// GCC 12's own intrinsics (_mm512_cvtph_ps, _mm512_cvtepi32_ps) pass _mm512_undefined_ps()
// as the masked-off source and then warn that it "may be used uninitialized"; the mask is
// all ones, so the warning is noise from the header, not from this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>

#include "ops/qgemm.h"
#include "ops/qgemm_kernels.h"

namespace ic::ops::detail {

namespace {

// Tokens per register tile for prefill: MT int32 dots + MT f32 accumulators + the weight,
// nibble mask, d, m and temporaries fit the 32 zmm registers.
constexpr int kTileTokens = 12;

inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// y[t0 .. t0+MT) x rows of groups [g, g+NG) over all blocks.
template <int BITS, int MT, int NG>
inline void tile(const QgemmArgs& a, int64_t g, int64_t t0) {
  const int64_t n_in = a.nb * 32;
  const int64_t code_bytes = a.record_bytes - 64;
  const __m512i nib = _mm512_set1_epi8(0x0f);
  __m512 acc[NG][MT];
  for (int n = 0; n < NG; ++n)
    for (int t = 0; t < MT; ++t) acc[n][t] = _mm512_setzero_ps();
  const int8_t* xq = a.xq + t0 * n_in;  // [MT, n_in]
  for (int64_t b = 0; b < a.nb; ++b) {
    const int8_t* xb = xq + b * 32;
    for (int n = 0; n < NG; ++n) {
      const uint8_t* rec = a.w + ((g + n) * a.nb + b) * a.record_bytes;
      __m512i dot[MT];
      for (int t = 0; t < MT; ++t) dot[t] = _mm512_setzero_si512();
      if constexpr (BITS == 8) {
        for (int k = 0; k < 8; ++k) {
          const __m512i wq = _mm512_load_si512(rec + 64 * k);
          for (int t = 0; t < MT; ++t)
            dot[t] = _mm512_dpbusd_epi32(dot[t], wq, bcast4(xb + t * n_in + 4 * k));
        }
      } else {
        for (int k = 0; k < 4; ++k) {
          const __m512i v = _mm512_load_si512(rec + 64 * k);
          const __m512i lo = _mm512_and_si512(v, nib);                         // values 4k..
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);   // 16 + 4k..
          for (int t = 0; t < MT; ++t) {
            dot[t] = _mm512_dpbusd_epi32(dot[t], lo, bcast4(xb + t * n_in + 4 * k));
            dot[t] = _mm512_dpbusd_epi32(dot[t], hi, bcast4(xb + t * n_in + 16 + 4 * k));
          }
        }
      }
      const __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i*)(rec + code_bytes)));
      const __m512 m =
          _mm512_cvtph_ps(_mm256_load_si256((const __m256i*)(rec + code_bytes + 32)));
      for (int t = 0; t < MT; ++t) {
        const int64_t sb = (t0 + t) * a.nb + b;
        const __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(a.xs[sb]));
        acc[n][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), ds, acc[n][t]);
        acc[n][t] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.xss[sb]), acc[n][t]);
      }
    }
  }
  for (int n = 0; n < NG; ++n) {
    const int64_t row0 = (g + n) * 16;
    const int64_t rows = std::min<int64_t>(16, a.n_out - row0);
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    for (int t = 0; t < MT; ++t)
      _mm512_mask_storeu_ps(a.y + (t0 + t) * a.n_out + row0, mask, acc[n][t]);
  }
}

template <int BITS, int NG>
void token_tail(const QgemmArgs& a, int64_t g, int64_t t0, int64_t nt) {
  switch (nt) {
    case 1: tile<BITS, 1, NG>(a, g, t0); break;
    case 2: tile<BITS, 2, NG>(a, g, t0); break;
    case 3: tile<BITS, 3, NG>(a, g, t0); break;
    case 4: tile<BITS, 4, NG>(a, g, t0); break;
    case 5: tile<BITS, 5, NG>(a, g, t0); break;
    case 6: tile<BITS, 6, NG>(a, g, t0); break;
    default: break;
  }
}

template <int BITS>
void run(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1) {
  for (int64_t g = g0; g < g1; ++g) {
    int64_t t = t0;
    for (; t + kTileTokens <= t1; t += kTileTokens) tile<BITS, kTileTokens, 1>(a, g, t);
    while (t < t1) {
      const int64_t nt = std::min<int64_t>(6, t1 - t);
      token_tail<BITS, 1>(a, g, t, nt);
      t += nt;
    }
  }
}

}  // namespace

int qgemm_token_tile_avx512() { return kTileTokens; }

void qgemm_avx512(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1) {
  if (a.code_bits == 4)
    run<4>(a, g0, g1, t0, t1);
  else
    run<8>(a, g0, g1, t0, t1);
}

int64_t probe_vpdpbusd_avx512(int64_t iters) {
  constexpr int kChains = 24;  // enough independent chains to cover the latency
  __m512i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_epi32(c);
  const __m512i a = _mm512_set1_epi8(3);
  __m512i b = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
    __asm__ volatile("" : "+v"(b));  // keep the loop from being folded
  }
  __m512i s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_epi32(s, acc[c]);
  return _mm512_reduce_add_epi32(s);
}

int64_t probe_stream_read_avx512(const uint8_t* data, int64_t bytes) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i < bytes; i += 256) {
    s0 = _mm512_add_epi64(s0, _mm512_load_si512(data + i));
    s1 = _mm512_add_epi64(s1, _mm512_load_si512(data + i + 64));
    s2 = _mm512_add_epi64(s2, _mm512_load_si512(data + i + 128));
    s3 = _mm512_add_epi64(s3, _mm512_load_si512(data + i + 192));
  }
  s0 = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
  return _mm512_reduce_add_epi64(s0);
}

}  // namespace ic::ops::detail
