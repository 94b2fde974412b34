#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention.h"
#include "ops/simd.h"
#include "ops/simd_dispatch.h"

namespace ic::ops::cpu {

void attention_reference(const AttentionParams& p) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t d = p.head_dim;
  std::vector<double> s;
  for (int64_t i = 0; i < p.n_q; ++i)
    for (int64_t h = 0; h < p.n_heads; ++h) {
      const float* q = p.q + (i * p.n_heads + h) * d;
      const float* k = p.k + (h / group) * p.kv_capacity * d;
      const float* v = p.v + (h / group) * p.kv_capacity * d;
      const int64_t n = p.q_pos0 + i + 1;
      s.assign(static_cast<size_t>(n), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0.0;
        for (int64_t c = 0; c < d; ++c) acc += static_cast<double>(q[c]) * k[j * d + c];
        s[j] = acc * p.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
      float* o = p.out + (i * p.n_heads + h) * d;
      for (int64_t c = 0; c < d; ++c) {
        double acc = 0.0;
        for (int64_t j = 0; j < n; ++j) acc += s[j] * v[j * d + c];
        o[c] = static_cast<float>(acc / sum);
      }
      if (p.lse) p.lse[i * p.n_heads + h] = static_cast<float>(mx + std::log(sum));
    }
}

namespace {

constexpr int64_t kKeyBlock = 16;   // keys per step: one 16-float vector of scores
constexpr int64_t kQueryTile = 8;   // query positions sharing each transposed key block

// Keys of one KV head transposed in blocks of 16: kt[block][c][j] = k[block * 16 + j][c], zero past
// n_keys, so a score vector for 16 keys is a chain of broadcast-FMAs.
void transpose_keys(const float* k, int64_t n_keys, int64_t d, float* kt) {
  const int64_t n_blocks = (n_keys + kKeyBlock - 1) / kKeyBlock;
  for (int64_t b = 0; b < n_blocks; ++b) {
    float* dst = kt + b * d * kKeyBlock;
    for (int64_t j = 0; j < kKeyBlock; ++j) {
      const int64_t key = b * kKeyBlock + j;
      if (key < n_keys)
        for (int64_t c = 0; c < d; ++c) dst[c * kKeyBlock + j] = k[key * d + c];
      else
        for (int64_t c = 0; c < d; ++c) dst[c * kKeyBlock + j] = 0.0f;
    }
  }
}

// One KV head and a tile of query positions [i0, i1): every query head of the group, with an
// online softmax over key blocks. `kt` holds the head's keys transposed (transpose_keys), from
// key 0. Every step is written elementwise over the 16 keys of a block (maxima, exponentials and
// sums kept as 16 lanes, folded once at the end) so the compiler vectorises all of it without
// reassociating float sums on its own. V: the 16-lane vector type (ops/simd.h, simd_dispatch.h).
template <class V>
IC_INLINE void attend_tile_t(const AttentionParams& p, int64_t g, int64_t i0, int64_t i1, const float* kt,
                             float* scratch) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  static_assert(kKeyBlock == 16, "one 16-lane vector of scores per key block");
  const int64_t d = p.head_dim;
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t rows = (i1 - i0) * group;
  const int64_t d16 = (d + 15) / 16 * 16;
  float* acc = scratch;                        // [rows, d16]
  float* mx = acc + rows * d16;                // [rows]
  float* lanes = mx + rows;                    // [rows, 16] partial softmax denominators
  std::fill(acc, acc + rows * d16, 0.0f);
  std::fill(mx, mx + rows, kNegInf);
  std::fill(lanes, lanes + rows * kKeyBlock, 0.0f);
  const float* vh = p.v + g * p.kv_capacity * d;
  const int64_t n_keys = p.q_pos0 + i1;  // the last query of the tile sees this many keys
  float vtail[16];
  for (int64_t j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const float* ktb = kt + (j0 / kKeyBlock) * d * kKeyBlock;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / group;
      const int64_t h = g * group + r % group;
      const int64_t visible = std::min<int64_t>(kKeyBlock, p.q_pos0 + i + 1 - j0);  // causal
      if (visible <= 0) continue;
      const float* q = p.q + (i * p.n_heads + h) * d;
      V s = {};
      for (int64_t c = 0; c < d; ++c) s += q[c] * vload<V>(ktb + c * kKeyBlock);
      s = keep_first(s * p.scale, static_cast<int32_t>(visible), kNegInf);
      const float new_max = std::max(mx[r], hmax(s));
      const float correction = exp_fast(mx[r] - new_max);
      s = exp_fast(s - new_max);
      vstore(lanes + r * kKeyBlock, vload<V>(lanes + r * kKeyBlock) * correction + s);
      mx[r] = new_max;
      // 16 output dims at a time, the running sum held in registers across the keys.
      float* a = acc + r * d16;
      const float* vb = vh + j0 * d;
      for (int64_t c0 = 0; c0 < d; c0 += 16) {
        V t = vload<V>(a + c0) * correction;
        if (c0 + 16 <= d) {
          for (int64_t j = 0; j < visible; ++j) t += lane(s, j) * vload<V>(vb + j * d + c0);
        } else {  // head_dim not a multiple of 16: copy the tail so no load runs past the row
          for (int64_t j = 0; j < visible; ++j) {
            for (int64_t c = 0; c < 16; ++c) vtail[c] = c0 + c < d ? vb[j * d + c0 + c] : 0.0f;
            t += lane(s, j) * vload<V>(vtail);
          }
        }
        vstore(a + c0, t);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r / group;
    const int64_t h = g * group + r % group;
    const float l = hsum(vload<V>(lanes + r * kKeyBlock));
    float* o = p.out + (i * p.n_heads + h) * d;
    const float inv = 1.0f / l;
    for (int64_t c = 0; c < d; ++c) o[c] = acc[r * d16 + c] * inv;
    if (p.lse) p.lse[i * p.n_heads + h] = mx[r] + std::log(l);
  }
}
IC_SIMD_DISPATCH(attend_tile, attend_tile_t)

// One query position i and one KV head for decode: with a single query there is nothing to
// share a key transpose with, so scores are dot products along head_dim (16-lane chunks), then
// a two-pass softmax over the whole row and the weighted sum of values. Needs head_dim % 16 == 0.
template <class V>
IC_INLINE void attend_one_t(const AttentionParams& p, int64_t g, int64_t i, float* scratch) {
  const int64_t d = p.head_dim;
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t n = p.q_pos0 + i + 1;
  const float* kh = p.k + g * p.kv_capacity * d;
  const float* vh = p.v + g * p.kv_capacity * d;
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = g * group + hh;
    const float* q = p.q + (i * p.n_heads + h) * d;
    float* s = scratch;  // [n]
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      V acc = {};
      for (int64_t c = 0; c < d; c += 16) acc += vload<V>(q + c) * vload<V>(kh + j * d + c);
      s[j] = hsum(acc) * p.scale;
      mx = std::max(mx, s[j]);
    }
    V lanes = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const V e = exp_fast(vload<V>(s + j) - mx);
      vstore(s + j, e);
      lanes += e;
    }
    float sum = hsum(lanes);
    for (; j < n; ++j) sum += (s[j] = exp_fast(s[j] - mx));
    float* o = p.out + (i * p.n_heads + h) * d;
    for (int64_t c = 0; c < d; c += 16) {
      V t = {};
      for (int64_t k = 0; k < n; ++k) t += s[k] * vload<V>(vh + k * d + c);
      vstore(o + c, t * (1.0f / sum));
    }
    if (p.lse) p.lse[i * p.n_heads + h] = mx + std::log(sum);
  }
}
IC_SIMD_DISPATCH(attend_one, attend_one_t)

}  // namespace

void attention(const AttentionParams& p) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  if (p.n_q <= 2 && p.head_dim % 16 == 0) {  // decode
    const int64_t n_keys = p.q_pos0 + p.n_q;
    if (p.pool) {  // one (query, KV head) per chunk: the same calls as below, in any order
      auto heads = [&](int64_t b, int64_t e) {
        std::vector<float> scratch(static_cast<size_t>(n_keys));
        for (int64_t it = b; it < e; ++it) attend_one(p, it % p.n_kv_heads, it / p.n_kv_heads, scratch.data());
      };
      const int64_t items = p.n_q * p.n_kv_heads;
      if (n_keys * p.n_kv_heads > 4096)
        p.pool->parallel_for(items, 1, heads);
      else
        heads(0, items);
      return;
    }
#pragma omp parallel if (n_keys * p.n_kv_heads > 4096)
    {
      std::vector<float> scratch(static_cast<size_t>(n_keys));
#pragma omp for collapse(2) schedule(static)
      for (int64_t i = 0; i < p.n_q; ++i)
        for (int64_t g = 0; g < p.n_kv_heads; ++g) attend_one(p, g, i, scratch.data());
    }
    return;
  }
  const int64_t n_tiles = (p.n_q + kQueryTile - 1) / kQueryTile;
  const int64_t n_keys = p.q_pos0 + p.n_q;
  const int64_t padded = (n_keys + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  const int64_t scratch_floats = kQueryTile * group * ((p.head_dim + 15) / 16 * 16 + 1 + kKeyBlock);
  // Keys are transposed once per call and shared by every tile (O(n d), against the O(n^2 d)
  // of the attention itself); decode transposes the whole history for one query, still only
  // a copy of what the scores read anyway.
  std::vector<float> kt(static_cast<size_t>(p.n_kv_heads * padded * p.head_dim));
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t g = 0; g < p.n_kv_heads; ++g)
      transpose_keys(p.k + g * p.kv_capacity * p.head_dim, n_keys, p.head_dim, kt.data() + g * padded * p.head_dim);
    std::vector<float> scratch(static_cast<size_t>(scratch_floats));
    // Tiles later in the sequence see more keys: hand them out dynamically, longest first.
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t t = n_tiles - 1; t >= 0; --t)
      for (int64_t g = 0; g < p.n_kv_heads; ++g) {
        const int64_t i0 = t * kQueryTile;
        attend_tile(p, g, i0, std::min(p.n_q, i0 + kQueryTile), kt.data() + g * padded * p.head_dim,
                    scratch.data());
      }
  }
}

}  // namespace ic::ops::cpu
