#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/simd.h"

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

// One KV head and a tile of query positions [i0, i1): every query head of the group, with an
// online softmax over key blocks. Keys are transposed per block into kt[d][16] so each score
// vector is a broadcast-FMA chain, and the block is reused by group * tile query rows.
IC_SIMD_CLONES
void attend_tile(const AttentionParams& p, int64_t g, int64_t i0, int64_t i1, float* scratch) {
  const int64_t d = p.head_dim;
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t rows = (i1 - i0) * group;
  float* kt = scratch;                       // [d, kKeyBlock]
  float* acc = kt + d * kKeyBlock;           // [rows, d]
  float* mx = acc + rows * d;                // [rows]
  float* sum = mx + rows;                    // [rows]
  std::fill(acc, acc + rows * d, 0.0f);
  std::fill(mx, mx + rows, -std::numeric_limits<float>::infinity());
  std::fill(sum, sum + rows, 0.0f);
  const float* kh = p.k + g * p.kv_capacity * d;
  const float* vh = p.v + g * p.kv_capacity * d;
  const int64_t n_keys = p.q_pos0 + i1;  // the last query of the tile sees this many keys
  for (int64_t j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, n_keys - j0);
    for (int64_t c = 0; c < d; ++c)
      for (int64_t j = 0; j < kKeyBlock; ++j) kt[c * kKeyBlock + j] = j < nb ? kh[(j0 + j) * d + c] : 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / group;
      const int64_t h = g * group + r % group;
      const int64_t visible = std::min<int64_t>(nb, p.q_pos0 + i + 1 - j0);  // causal
      if (visible <= 0) continue;
      const float* q = p.q + (i * p.n_heads + h) * d;
      float s[kKeyBlock] = {};
      for (int64_t c = 0; c < d; ++c) {
        const float qc = q[c];
        for (int64_t j = 0; j < kKeyBlock; ++j) s[j] += qc * kt[c * kKeyBlock + j];
      }
      float block_max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < kKeyBlock; ++j) {
        s[j] = j < visible ? s[j] * p.scale : -std::numeric_limits<float>::infinity();
        block_max = std::max(block_max, s[j]);
      }
      const float new_max = std::max(mx[r], block_max);
      const float correction = exp_fast(mx[r] - new_max);
      float block_sum = 0.0f;
      for (int64_t j = 0; j < kKeyBlock; ++j) {
        s[j] = exp_fast(s[j] - new_max);
        block_sum += s[j];
      }
      mx[r] = new_max;
      sum[r] = sum[r] * correction + block_sum;
      float* a = acc + r * d;
      for (int64_t c = 0; c < d; ++c) a[c] *= correction;
      for (int64_t j = 0; j < visible; ++j) {
        const float pj = s[j];
        const float* vr = vh + (j0 + j) * d;
        for (int64_t c = 0; c < d; ++c) a[c] += pj * vr[c];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r / group;
    const int64_t h = g * group + r % group;
    float* o = p.out + (i * p.n_heads + h) * d;
    const float inv = 1.0f / sum[r];
    for (int64_t c = 0; c < d; ++c) o[c] = acc[r * d + c] * inv;
    if (p.lse) p.lse[i * p.n_heads + h] = mx[r] + std::log(sum[r]);
  }
}

}  // namespace

void attention(const AttentionParams& p) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t n_tiles = (p.n_q + kQueryTile - 1) / kQueryTile;
  const int64_t scratch_floats = p.head_dim * kKeyBlock + kQueryTile * group * (p.head_dim + 2);
  // Tiles later in the sequence see more keys: hand them out dynamically, longest first.
#pragma omp parallel
  {
    std::vector<float> scratch(static_cast<size_t>(scratch_floats));
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t t = n_tiles - 1; t >= 0; --t)
      for (int64_t g = 0; g < p.n_kv_heads; ++g) {
        const int64_t i0 = t * kQueryTile;
        attend_tile(p, g, i0, std::min(p.n_q, i0 + kQueryTile), scratch.data());
      }
  }
}

}  // namespace ic::ops::cpu
