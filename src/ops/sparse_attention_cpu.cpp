#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/simd.h"
#include "ops/sparse_attention.h"

namespace ic::ops::cpu {
namespace {

// Serial, before any parallel region, so a bad index surfaces as an ic::Error.
void check_indices(const SparseAttentionParams& p) {
  IC_CHECK(p.k != nullptr && p.v != nullptr,
           "sparse_attention (cpu): the CPU kernels read an f32 cache (the front widens a bf16 one)");
  for (int64_t t = 0; t < p.n_q; ++t)
    for (int64_t i = 0; i < p.topk_k; ++i) {
      const int32_t s = p.topk[t * p.topk_k + i];
      IC_CHECK(s >= -1 && s <= p.q_pos0 + t,
               "sparse_attention: query {} (position {}) selects key {} in entry {}; indices must "
               "be -1 or in [0, {}]",
               t, p.q_pos0 + t, s, i, p.q_pos0 + t);
    }
}

}  // namespace

void sparse_attention_reference(const SparseAttentionParams& p) {
  check_indices(p);
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t d = p.head_dim;
  std::vector<double> s;
  for (int64_t t = 0; t < p.n_q; ++t)
    for (int64_t h = 0; h < p.n_heads; ++h) {
      const float* q = p.q + (t * p.n_heads + h) * d;
      const float* k = p.k + (h / group) * p.kv_capacity * d;
      const float* v = p.v + (h / group) * p.kv_capacity * d;
      const int32_t* idx = p.topk + t * p.topk_k;
      s.assign(static_cast<size_t>(p.topk_k), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t i = 0; i < p.topk_k; ++i) {
        if (idx[i] < 0) continue;
        double acc = 0.0;
        for (int64_t c = 0; c < d; ++c) acc += static_cast<double>(q[c]) * k[idx[i] * d + c];
        s[i] = acc * p.scale;
        mx = std::max(mx, s[i]);
      }
      double sum = 0.0;
      for (int64_t i = 0; i < p.topk_k; ++i)
        if (idx[i] >= 0) sum += (s[i] = std::exp(s[i] - mx));
      float* o = p.out + (t * p.n_heads + h) * d;
      for (int64_t c = 0; c < d; ++c) {
        double acc = 0.0;
        for (int64_t i = 0; i < p.topk_k; ++i)
          if (idx[i] >= 0) acc += s[i] * v[idx[i] * d + c];
        o[c] = sum > 0.0 ? static_cast<float>(acc / sum) : 0.0f;
      }
      if (p.lse) p.lse[t * p.n_heads + h] = sum > 0.0 ? static_cast<float>(mx + std::log(sum))
                                                       : -std::numeric_limits<float>::infinity();
    }
}

namespace {

constexpr int64_t kPrefetchAhead = 8;  // gathered rows in flight ahead of the one in use

// dot_f32 with its 16 partial sums folded as a tree (8, 4, 2, 1 lanes) instead of a serial
// chain: one score per gathered key is the whole inner loop here, so the fold's latency counts.
inline float dot_tree(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  for (int l = 0; j < n; ++j, ++l) acc[l] += a[j] * b[j];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// One token and one KV head: every query head of the group over the token's selected keys.
// Each gathered key and value row is read once and used by the whole group.
IC_SIMD_CLONES
void attend_token(const SparseAttentionParams& p, int64_t t, int64_t g, std::vector<int32_t>& sel,
                  std::vector<float>& scratch) {
  const int64_t d = p.head_dim;
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int32_t* idx = p.topk + t * p.topk_k;
  sel.clear();
  for (int64_t i = 0; i < p.topk_k; ++i)
    if (idx[i] >= 0) sel.push_back(idx[i]);
  const int64_t n = static_cast<int64_t>(sel.size());
  const float* q = p.q + (t * p.n_heads + g * group) * d;  // [group, d]
  float* out = p.out + (t * p.n_heads + g * group) * d;
  if (n == 0) {
    std::fill(out, out + group * d, 0.0f);
    if (p.lse)
      std::fill(p.lse + t * p.n_heads + g * group, p.lse + t * p.n_heads + (g + 1) * group,
                -std::numeric_limits<float>::infinity());
    return;
  }
  scratch.resize(static_cast<size_t>(group * n));
  float* s = scratch.data();  // [group, n]
  const float* kh = p.k + g * p.kv_capacity * d;
  const float* vh = p.v + g * p.kv_capacity * d;
  // Selected rows are scattered over the cache: fetch a few rows ahead of their use.
  auto prefetch_row = [d](const float* row) {
    for (int64_t c = 0; c < d; c += 16) __builtin_prefetch(row + c);
  };
  for (int64_t j = 0; j < std::min(n, kPrefetchAhead); ++j) prefetch_row(kh + static_cast<int64_t>(sel[j]) * d);
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPrefetchAhead < n) prefetch_row(kh + static_cast<int64_t>(sel[j + kPrefetchAhead]) * d);
    const float* kr = kh + static_cast<int64_t>(sel[j]) * d;
    for (int64_t r = 0; r < group; ++r) s[r * n + j] = dot_tree(q + r * d, kr, d) * p.scale;
  }
  std::fill(out, out + group * d, 0.0f);
  for (int64_t r = 0; r < group; ++r) {
    float* sr = s + r * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sr[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) sum += (sr[j] = exp_fast(sr[j] - mx));
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) sr[j] *= inv;
    if (p.lse) p.lse[t * p.n_heads + g * group + r] = mx + std::log(sum);
  }
  for (int64_t j = 0; j < std::min(n, kPrefetchAhead); ++j) prefetch_row(vh + static_cast<int64_t>(sel[j]) * d);
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPrefetchAhead < n) prefetch_row(vh + static_cast<int64_t>(sel[j + kPrefetchAhead]) * d);
    const float* vr = vh + static_cast<int64_t>(sel[j]) * d;
    for (int64_t r = 0; r < group; ++r) {
      const float pj = s[r * n + j];
      float* o = out + r * d;
      for (int64_t c = 0; c < d; ++c) o[c] += pj * vr[c];
    }
  }
}

}  // namespace

void sparse_attention(const SparseAttentionParams& p) {
  check_indices(p);
  if (p.pool) {  // the same calls as below, one (token, KV head) per chunk
    auto items = [&](int64_t b, int64_t e) {
      std::vector<int32_t> sel;
      std::vector<float> scratch;
      for (int64_t it = b; it < e; ++it) attend_token(p, it / p.n_kv_heads, it % p.n_kv_heads, sel, scratch);
    };
    const int64_t n_items = p.n_q * p.n_kv_heads;
    if (n_items * p.topk_k > 4096)
      p.pool->parallel_for(n_items, 1, items);
    else
      items(0, n_items);
    return;
  }
#pragma omp parallel
  {
    std::vector<int32_t> sel;
    std::vector<float> scratch;
#pragma omp for schedule(dynamic, 4) collapse(2)
    for (int64_t t = 0; t < p.n_q; ++t)
      for (int64_t g = 0; g < p.n_kv_heads; ++g) attend_token(p, t, g, sel, scratch);
  }
}

}  // namespace ic::ops::cpu
