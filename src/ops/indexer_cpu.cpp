#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "ops/indexer.h"
#include "ops/simd.h"
#include "ops/simd_dispatch.h"
#include "ops/topk.h"

namespace ic::ops {

void quantize_fp8_rows(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float amax = 0.0f;
    for (int64_t c = 0; c < dim; ++c) amax = std::max(amax, std::fabs(xr[c]));
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    for (int64_t c = 0; c < dim; ++c) x8[r * dim + c] = f32_to_f8e4m3(xr[c] / s);
    scale[r] = s;
  }
}

void quantize_indexer_query(const float* q, const float* w, int64_t n_q, int64_t n_heads,
                            int64_t head_dim, uint8_t* q8, float* w_folded) {
  quantize_fp8_rows(q, n_q * n_heads, head_dim, q8, w_folded);
  for (int64_t i = 0; i < n_q * n_heads; ++i) w_folded[i] *= w[i];
}

namespace cpu {
namespace {

// e4m3 -> f32 for all 256 codes; every e4m3 value is exact in f32.
std::array<float, 256> e4m3_table() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = f8e4m3_to_f32(static_cast<uint8_t>(i));
  return t;
}

// Element i of an indexer operand of type dt, as a double (exact for every type here).
double operand(const void* x, DType dt, int64_t i, const std::array<float, 256>& lut) {
  switch (dt) {
    case DType::F8_E4M3: return lut[static_cast<const uint8_t*>(x)[i]];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(x)[i]);
    default: return static_cast<const float*>(x)[i];
  }
}

// I[t, s] in double, before the key scale.
double reference_score(const void* q, DType dt, const float* w, int64_t t, int64_t n_heads, int64_t d,
                       const void* k, int64_t k_row, const std::array<float, 256>& lut) {
  double total = 0.0;
  for (int64_t h = 0; h < n_heads; ++h) {
    double dot = 0.0;
    for (int64_t c = 0; c < d; ++c)
      dot += operand(q, dt, (t * n_heads + h) * d + c, lut) * operand(k, dt, k_row * d + c, lut);
    total += static_cast<double>(w[t * n_heads + h]) * std::max(dot, 0.0);
  }
  return total;
}

}  // namespace

void indexer_scores_reference(const IndexerParams& p, float* scores) {
  const auto lut = e4m3_table();
  const bool fp8 = p.dtype == DType::F8_E4M3;
  for (int64_t t = 0; t < p.n_q; ++t) {
    const int64_t start = indexer_row_start(p, t), len = indexer_row_end(p, t) - start;
    for (int64_t j = 0; j < p.n_keys; ++j) {
      float& out = scores[t * p.n_keys + j];
      if (j >= len) {
        out = -std::numeric_limits<float>::infinity();
        continue;
      }
      const int64_t s = start + j;
      const double total = reference_score(p.q, p.dtype, p.w, t, p.n_heads, p.head_dim, p.k, s, lut);
      out = static_cast<float>(fp8 ? total * p.k_scale[s] : total);
    }
  }
}

void indexer_scores_paged_reference(const IndexerPagedParams& p, float* scores) {
  const auto lut = e4m3_table();
  const int64_t d = p.head_dim, page = indexer_page_bytes(d);
  std::vector<uint8_t> keys;
  for (int64_t b = 0; b < p.n_seq; ++b) {
    const int64_t len = p.seq_lens[b];
    keys.resize(static_cast<size_t>(len * d));
    std::vector<float> scale(static_cast<size_t>(len));
    for (int64_t s = 0; s < len; ++s) {
      const uint8_t* pg = p.cache + p.block_table[b * p.max_pages + s / kIndexerPageTokens] * page;
      const int64_t r = s % kIndexerPageTokens;
      std::memcpy(keys.data() + s * d, pg + r * d, static_cast<size_t>(d));
      std::memcpy(&scale[s], pg + kIndexerPageTokens * d + r * 4, 4);
    }
    for (int64_t j = 0; j < p.ld; ++j)
      scores[b * p.ld + j] =
          j < len ? static_cast<float>(reference_score(p.q, DType::F8_E4M3, p.w, b, p.n_heads, d, keys.data(), j, lut) *
                                       scale[j])
                  : -std::numeric_limits<float>::infinity();
  }
}

namespace {

constexpr int64_t kKeyBlock = 32;        // keys per step: two 16-float vectors per head
// Query rows sharing each transposed key block: enough that the transposition is amortised
// over ~256 (row, head) dot products, within [16, 64] rows.
constexpr int64_t kTargetHeadRows = 256;
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kMaxChunkRows = 64;
constexpr int64_t kIndexerChunkBytes = int64_t{4} << 20;  // score rows held per chunk

// One query row (all heads) against a transposed block of keys kt[c][32]:
//   out[j] = sum_h w[h] * ReLU(sum_c q[h, c] * kt[c, j]).
// Written over a 16-lane vector type V (ops/simd_dispatch.h): v16f on AVX-512 (one zmm), f32x16
// (two ymm) on AVX2 and baseline. G heads at a time keep 2 G independent FMA chains in flight:
// 4 with AVX-512's 32 zmm registers, 2 with AVX2's 16 ymm (4 would need all 16 ymm for the
// accumulators alone and spill). Heads are summed in order 0..n_heads-1 and each lane is one key, so a key's score does
// not depend on G, on where its block or chunk starts, or on the thread count.
template <class V>
IC_INLINE void score_row_block_t(const float* q, const float* w, const float* kt, int64_t n_heads, int64_t d, float* out) {
  constexpr int64_t G = std::is_same_v<V, v16f> ? 4 : 2;
  V tot0 = {}, tot1 = {};
  int64_t h = 0;
  for (; h + G <= n_heads; h += G) {
    V a[G] = {}, b[G] = {};
    for (int64_t c = 0; c < d; ++c) {
      const V k0 = vload<V>(kt + c * kKeyBlock), k1 = vload<V>(kt + c * kKeyBlock + 16);
#pragma GCC unroll 4
      for (int64_t g = 0; g < G; ++g) {
        const float x = q[(h + g) * d + c];
        a[g] += x * k0;
        b[g] += x * k1;
      }
    }
#pragma GCC unroll 4
    for (int64_t g = 0; g < G; ++g) {
      tot0 += w[h + g] * where_positive(a[g], a[g]);
      tot1 += w[h + g] * where_positive(b[g], b[g]);
    }
  }
  for (; h < n_heads; ++h) {
    const float* qh = q + h * d;
    V a = {}, b = {};
    for (int64_t c = 0; c < d; ++c) {
      a += qh[c] * vload<V>(kt + c * kKeyBlock);
      b += qh[c] * vload<V>(kt + c * kKeyBlock + 16);
    }
    tot0 += w[h] * where_positive(a, a);
    tot1 += w[h] * where_positive(b, b);
  }
  vstore(out, tot0);
  vstore(out + 16, tot1);
}
IC_SIMD_DISPATCH(score_row_block, score_row_block_t)

// Keys [j0, j0 + nb) as f32, transposed to kt[c * 32 + j] and zero-padded to 32 keys.
void load_key_block(const IndexerParams& p, const std::array<float, 256>& lut, int64_t j0,
                    int64_t nb, float* kt) {
  const int64_t d = p.head_dim;
  if (nb < kKeyBlock) std::fill(kt, kt + d * kKeyBlock, 0.0f);
  if (p.dtype == DType::F32) {
    const float* k = static_cast<const float*>(p.k) + j0 * d;
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t c = 0; c < d; ++c) kt[c * kKeyBlock + j] = k[j * d + c];
  } else if (p.dtype == DType::BF16) {
    const uint16_t* k = static_cast<const uint16_t*>(p.k) + j0 * d;
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t c = 0; c < d; ++c) kt[c * kKeyBlock + j] = bf16_to_f32(k[j * d + c]);
  } else {
    const uint8_t* k = static_cast<const uint8_t*>(p.k) + j0 * d;
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t c = 0; c < d; ++c) kt[c * kKeyBlock + j] = lut[k[j * d + c]];
  }
}

// The scoring state for a run of query rows: chunk size, row stride of the score buffer.
struct ChunkPlan {
  int64_t rows;  // query rows per chunk
  int64_t ld;    // floats per buffered score row: covers every key block any row reads
  int64_t n_chunks;
};

ChunkPlan plan_chunks(const IndexerParams& p) {
  ChunkPlan c;
  c.ld = (p.q_pos0 + p.n_q + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  const int64_t wanted = std::clamp(kTargetHeadRows / p.n_heads, kMinChunkRows, kMaxChunkRows);
  c.rows = std::clamp<int64_t>(kIndexerChunkBytes / (c.ld * int64_t{sizeof(float)}), 1, wanted);
  c.n_chunks = (p.n_q + c.rows - 1) / c.rows;
  return c;
}

// Query rows [t0, t1) as f32 [rows, n_heads, head_dim]: a view of p.q, or widened into
// `scratch` (exact: e4m3 and bf16 fit f32).
const float* chunk_query(const IndexerParams& p, const std::array<float, 256>& lut, int64_t t0,
                         int64_t t1, std::vector<float>& scratch) {
  const int64_t row = p.n_heads * p.head_dim;
  if (p.dtype == DType::F32) return static_cast<const float*>(p.q) + t0 * row;
  scratch.resize(static_cast<size_t>((t1 - t0) * row));
  if (p.dtype == DType::BF16) {
    const uint16_t* qb = static_cast<const uint16_t*>(p.q) + t0 * row;
    for (int64_t i = 0; i < (t1 - t0) * row; ++i) scratch[i] = bf16_to_f32(qb[i]);
    return scratch.data();
  }
  const uint8_t* q8 = static_cast<const uint8_t*>(p.q) + t0 * row;
  for (int64_t i = 0; i < (t1 - t0) * row; ++i) scratch[i] = lut[q8[i]];
  return scratch.data();
}

// Scores of query rows [t0, t1) for key blocks [b0, b1) into buf[(t - t0) * ld + s]. Entries
// past a row's causal end hold unspecified values.
void score_chunk(const IndexerParams& p, const std::array<float, 256>& lut, const float* qf,
                 int64_t t0, int64_t t1, int64_t b0, int64_t b1, float* buf, int64_t ld, float* kt) {
  const int64_t hd = p.n_heads * p.head_dim;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t j0 = b * kKeyBlock;
    const int64_t nb = std::min(kKeyBlock, p.q_pos0 + t1 - j0);  // keys the last row sees
    load_key_block(p, lut, j0, nb, kt);
    for (int64_t t = t0; t < t1; ++t) {
      if (j0 > p.q_pos0 + t) continue;
      float* o = buf + (t - t0) * ld + j0;
      score_row_block(qf + (t - t0) * hd, p.w + t * p.n_heads, kt, p.n_heads, p.head_dim, o);
      if (p.dtype == DType::F8_E4M3)
        for (int64_t j = 0; j < nb; ++j) o[j] *= p.k_scale[j0 + j];
    }
  }
}

int64_t key_blocks(const IndexerParams& p, int64_t t1) {
  return (p.q_pos0 + t1 + kKeyBlock - 1) / kKeyBlock;
}

// Scores every query row chunk by chunk and calls emit(t, row, selector) once per row with
// the row's scores (valid on [0, q_pos0 + t]); calls may run concurrently on different
// threads, each with its own RowTopk. Many chunks: threads take whole chunks. Few (decode):
// each chunk's key blocks are split across threads, then its rows.
template <typename Emit>
void score_rows(const IndexerParams& p, Emit emit) {
  const auto lut = e4m3_table();
  const ChunkPlan plan = plan_chunks(p);
  const int64_t kt_floats = p.head_dim * kKeyBlock;
  if (plan.n_chunks >= 2 * omp_get_max_threads()) {
#pragma omp parallel
    {
      std::vector<float> buf(static_cast<size_t>(plan.rows * plan.ld)), kt(kt_floats), qs;
      RowTopk sel;
      // Later chunks see more keys: hand them out longest first.
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = plan.n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * plan.rows, t1 = std::min(p.n_q, t0 + plan.rows);
        const float* qf = chunk_query(p, lut, t0, t1, qs);
        score_chunk(p, lut, qf, t0, t1, 0, key_blocks(p, t1), buf.data(), plan.ld, kt.data());
        for (int64_t t = t0; t < t1; ++t) emit(t, buf.data() + (t - t0) * plan.ld, sel);
      }
    }
    return;
  }
  std::vector<float> buf(static_cast<size_t>(plan.rows * plan.ld)), qs;
  for (int64_t c = 0; c < plan.n_chunks; ++c) {
    const int64_t t0 = c * plan.rows, t1 = std::min(p.n_q, t0 + plan.rows);
    const float* qf = chunk_query(p, lut, t0, t1, qs);
#pragma omp parallel
    {
      std::vector<float> kt(kt_floats);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < key_blocks(p, t1); ++b)
        score_chunk(p, lut, qf, t0, t1, b, b + 1, buf.data(), plan.ld, kt.data());
      RowTopk sel;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = t0; t < t1; ++t) emit(t, buf.data() + (t - t0) * plan.ld, sel);
    }
  }
}

}  // namespace

void indexer_scores(const IndexerParams& p, float* scores) {
  score_rows(p, [&](int64_t t, const float* row, RowTopk&) {
    const int64_t n = p.q_pos0 + t + 1;
    float* out = scores + t * p.n_keys;
    std::copy(row, row + n, out);
    std::fill(out + n, out + p.n_keys, -std::numeric_limits<float>::infinity());
  });
}

void indexer_topk(const IndexerParams& p, int32_t* topk, int64_t k) {
  score_rows(p, [&](int64_t t, const float* row, RowTopk& sel) {
    sel.select(row, p.q_pos0 + t + 1, k, topk + t * k);
  });
}

}  // namespace cpu
}  // namespace ic::ops
