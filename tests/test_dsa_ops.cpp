// DSA operations (lightning indexer, top-k, sparse attention) on the CPU: every fast path
// against its plain reference on fresh random inputs, plus the edge cases of DSA's index
// lists. Tolerances are derived, not picked (Higham, Accuracy and Stability of Numerical
// Algorithms, eq. 3.5): a length-n f32 sum of products errs by at most
// gamma_n * sum|a_i b_i|, gamma_n = n u / (1 - n u), u = 2^-24.
//
// Indexer, f32 (per (t, s)): each head's dot errs by <= gamma_d * A_h, A_h = sum_c |q_hc k_c|;
// ReLU is 1-Lipschitz; the head sum of w_h * relu(.) (FMA, one rounding per term) adds
// gamma_H * sum_h |w_h| (A_h + gamma_d A_h); the reference rounds its double result once (u).
// So |fast - ref| <= (gamma_d + gamma_H (1 + gamma_d)) B + u |ref|, B = sum_h |w_h| A_h, and
// the fp8 path multiplies by k_scale once more (+ u |ref|) on exactly dequantised inputs.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "op_test_util.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/attention.h"
#include "ops/indexer.h"
#include "ops/sparse_attention.h"
#include "ops/topk.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using test::Rng;

// Runs f with the OpenMP team size set to n, restoring the previous size.
template <typename F>
void with_threads(int n, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(before);
}

// ---------------------------------------------------------------------------------------
// Top-k

TopkParams topk_params(const std::vector<float>& s, std::vector<int32_t>& out, int64_t n_q,
                       int64_t stride, int64_t q_pos0, int64_t k) {
  out.assign(static_cast<size_t>(n_q * k), -7);
  return TopkParams{s.data(), out.data(), n_q, stride, q_pos0, k};
}

void check_topk_matches_reference(const std::vector<float>& s, int64_t n_q, int64_t stride,
                                  int64_t q_pos0, int64_t k) {
  std::vector<int32_t> fast, ref;
  cpu::topk(topk_params(s, fast, n_q, stride, q_pos0, k));
  cpu::topk_reference(topk_params(s, ref, n_q, stride, q_pos0, k));
  ASSERT_EQ(fast, ref) << "n_q " << n_q << " q_pos0 " << q_pos0 << " k " << k;
}

TEST(TopkCpu, MatchesSortingReferenceOnRandomRows) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t k : {1, 5, 64, 100, 257}) {
    const int64_t n_q = 37, q_pos0 = 150, stride = q_pos0 + n_q + 3;
    auto s = rng.normal(n_q * stride, 10.0f);
    check_topk_matches_reference(s, n_q, stride, q_pos0, k);
  }
  // Prefill from position 0: rows 0 .. k-2 have fewer than k entries and are padded.
  auto s = rng.normal(100 * 100);
  check_topk_matches_reference(s, 100, 100, 0, 64);
}

TEST(TopkCpu, TiesGoToTheLowerIndex) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  // Few distinct values (including both zeros, which must tie): most of the k-th value's
  // copies fall on either side of the cut, and only lower indices may be kept.
  const int64_t n_q = 23, q_pos0 = 300, stride = q_pos0 + n_q;
  std::vector<float> s(n_q * stride);
  std::uniform_int_distribution<int> pick(0, 4);
  const float values[5] = {-1.0f, -0.0f, 0.0f, 2.5f, 2.5f};
  for (auto& x : s) x = values[pick(rng.gen)];
  for (int64_t k : {1, 7, 64, 200}) check_topk_matches_reference(s, n_q, stride, q_pos0, k);
  // Explicitly: all equal, so the answer is 0 .. k-1.
  std::vector<float> flat(5 * 40, 3.0f);
  std::vector<int32_t> out;
  cpu::topk(topk_params(flat, out, 5, 40, 35, 8));
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t i = 0; i < 8; ++i) ASSERT_EQ(out[t * 8 + i], i);
}

TEST(TopkCpu, RowsShorterThanKArePaddedWithMinusOne) {
  const std::vector<float> s = {0.5f, 2.0f, -1.0f, 9.0f, 7.0f, 7.0f};  // 2 rows of stride 3
  std::vector<int32_t> out;
  cpu::topk(topk_params(s, out, 2, 3, 1, 4));  // rows see 2 and 3 keys
  EXPECT_EQ(out, (std::vector<int32_t>{1, 0, -1, -1, 0, 1, 2, -1}));
  std::vector<float> one = {-3.0f};
  cpu::topk(topk_params(one, out, 1, 1, 0, 3));  // a one-token row
  EXPECT_EQ(out, (std::vector<int32_t>{0, -1, -1}));
}

TEST(TopkCpu, LargeRowsAreDeterministicAcrossThreadCounts) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t n_q = 64, q_pos0 = 3000, stride = q_pos0 + n_q;
  auto s = rng.normal(n_q * stride);
  for (size_t i = 0; i < s.size(); i += 3) s[i] = std::round(s[i] * 4.0f) / 4.0f;  // many ties
  std::vector<int32_t> a, b;
  with_threads(1, [&] { cpu::topk(topk_params(s, a, n_q, stride, q_pos0, 256)); });
  with_threads(2, [&] { cpu::topk(topk_params(s, b, n_q, stride, q_pos0, 256)); });
  ASSERT_EQ(a, b);
  check_topk_matches_reference(s, n_q, stride, q_pos0, 256);
}

TEST(TopkCpu, TensorFrontChecksShapes) {
  Tensor s = Tensor::zeros({4, 10}, DType::F32), out = Tensor::zeros({4, 3}, DType::I32);
  EXPECT_NO_THROW(topk(s, 6, out));
  EXPECT_THROW(topk(s, 7, out), Error);  // the last query would need 11 columns
  Tensor bad = Tensor::zeros({3, 3}, DType::I32);
  EXPECT_THROW(topk(s, 0, bad), Error);
  Tensor f = Tensor::zeros({4, 3}, DType::F32);
  EXPECT_THROW(topk(s, 0, f), Error);
}

// ---------------------------------------------------------------------------------------
// Lightning indexer

struct IndexerCase {
  int64_t n_q, q_pos0, heads, dim;
  int64_t n_keys() const { return q_pos0 + n_q + 2; }  // a cache slightly larger than needed
};

struct IndexerInputs {
  std::vector<float> q, k, w;
  // fp8 forms: q8 per head row with its scale folded into w8, k8 per token row.
  std::vector<uint8_t> q8, k8;
  std::vector<float> w8, k_scale;
  IndexerParams f32, fp8;
};

IndexerInputs make_indexer(Rng& rng, const IndexerCase& c) {
  IndexerInputs in;
  in.q = rng.normal(c.n_q * c.heads * c.dim);
  in.k = rng.normal(c.n_keys() * c.dim, 2.0f);
  in.w = rng.normal(c.n_q * c.heads, 1.0f / std::sqrt(float(c.heads * c.dim)));
  in.q8.resize(in.q.size());
  in.w8.resize(in.w.size());
  in.k8.resize(in.k.size());
  in.k_scale.resize(c.n_keys());
  quantize_indexer_query(in.q.data(), in.w.data(), c.n_q, c.heads, c.dim, in.q8.data(), in.w8.data());
  quantize_fp8_rows(in.k.data(), c.n_keys(), c.dim, in.k8.data(), in.k_scale.data());
  in.f32 = {in.q.data(), in.k.data(), nullptr, in.w.data(), DType::F32, c.n_q, c.heads, c.dim,
            c.n_keys(), c.q_pos0};
  in.fp8 = {in.q8.data(), in.k8.data(), in.k_scale.data(), in.w8.data(), DType::F8_E4M3, c.n_q,
            c.heads, c.dim, c.n_keys(), c.q_pos0};
  return in;
}

// The derived bound above for every (t, s), from the values the kernel actually multiplies.
std::vector<double> indexer_tolerance(const IndexerParams& p) {
  const bool fp8 = p.dtype == DType::F8_E4M3;
  auto qv = [&](int64_t i) -> double {
    return fp8 ? f8e4m3_to_f32(static_cast<const uint8_t*>(p.q)[i]) : static_cast<const float*>(p.q)[i];
  };
  auto kv = [&](int64_t i) -> double {
    return fp8 ? f8e4m3_to_f32(static_cast<const uint8_t*>(p.k)[i]) : static_cast<const float*>(p.k)[i];
  };
  const double g = gamma(p.head_dim) + gamma(p.n_heads) * (1 + gamma(p.head_dim));
  std::vector<double> tol(static_cast<size_t>(p.n_q * p.n_keys), 0.0);
  for (int64_t t = 0; t < p.n_q; ++t)
    for (int64_t s = 0; s <= p.q_pos0 + t; ++s) {
      double b = 0.0, i_abs = 0.0;
      for (int64_t h = 0; h < p.n_heads; ++h) {
        double a = 0.0, dot = 0.0;
        for (int64_t c = 0; c < p.head_dim; ++c) {
          const double x = qv((t * p.n_heads + h) * p.head_dim + c), y = kv(s * p.head_dim + c);
          a += std::fabs(x * y);
          dot += x * y;
        }
        b += std::fabs(p.w[t * p.n_heads + h]) * a;
        i_abs += std::fabs(p.w[t * p.n_heads + h]) * std::max(dot, 0.0);
      }
      const double ks = fp8 ? p.k_scale[s] : 1.0;
      tol[t * p.n_keys + s] = ks * (g * b + (fp8 ? 2 : 1) * kU * i_abs) + 1e-30;
    }
  return tol;
}

void check_indexer_scores(const IndexerParams& p) {
  std::vector<float> fast(p.n_q * p.n_keys, NAN), ref(p.n_q * p.n_keys, NAN);
  cpu::indexer_scores(p, fast.data());
  cpu::indexer_scores_reference(p, ref.data());
  const auto tol = indexer_tolerance(p);
  for (int64_t t = 0; t < p.n_q; ++t)
    for (int64_t s = 0; s < p.n_keys; ++s) {
      const size_t i = t * p.n_keys + s;
      if (s > p.q_pos0 + t) {
        ASSERT_EQ(fast[i], kNegInf) << t << " " << s;
        ASSERT_EQ(ref[i], kNegInf) << t << " " << s;
      } else {
        ASSERT_NEAR(fast[i], ref[i], tol[i]) << "t " << t << " s " << s;
      }
    }
}

const IndexerCase kIndexerCases[] = {
    {1, 0, 4, 64},     // the first token: a one-key row
    {1, 333, 8, 64},   // decode step, context not a multiple of 32
    {45, 0, 16, 64},   // prefill, rows not a multiple of 16
    {37, 70, 5, 24},   // odd head count (remainder head loop) and a small head dim
    {20, 13, 4, 128},  // V3.2's head dim
};

TEST(IndexerCpu, F32ScoresMatchReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const auto& c : kIndexerCases) {
    SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " H " << c.heads
                                    << " d " << c.dim);
    auto in = make_indexer(rng, c);
    check_indexer_scores(in.f32);
  }
}

TEST(IndexerCpu, Fp8ScoresMatchReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const auto& c : kIndexerCases) {
    SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " H " << c.heads
                                    << " d " << c.dim);
    auto in = make_indexer(rng, c);
    check_indexer_scores(in.fp8);
  }
}

// The kernel is built per ISA (v16f with 4 heads per step on AVX-512, two v8f with 2 heads on
// AVX2 and baseline): every path this machine runs, against the reference, f32 and fp8.
TEST(IndexerCpu, EveryIsaPathMatchesReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  test::for_each_cpu_isa([&] {
    for (const auto& c : kIndexerCases) {
      SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " H " << c.heads << " d "
                                      << c.dim);
      auto in = make_indexer(rng, c);
      check_indexer_scores(in.f32);
      check_indexer_scores(in.fp8);
    }
  });
}

// e4m3 keeps 3 mantissa bits: a normal value rounds with relative error <= 2^-4, and below
// 2^-6 (scaled) the step is 2^-9, so |x - x8 * scale| <= max(2^-4 |x|, 2^-10 scale). The
// division by the scale and the folding of q's scale into w add a few u. Per (t, s), the
// fp8 scores then differ from the f32 ones by at most
//   sum_h |w_h| sum_c (|q_c| e_k + |k_c| e_q + e_q e_k)   (ReLU being 1-Lipschitz).
TEST(IndexerCpu, Fp8QuantisationErrorWithinE4m3Bound) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const IndexerCase c{30, 50, 8, 64};
  auto in = make_indexer(rng, c);
  std::vector<float> q_scale(c.n_q * c.heads);
  std::vector<uint8_t> q8(in.q.size());
  quantize_fp8_rows(in.q.data(), c.n_q * c.heads, c.dim, q8.data(), q_scale.data());
  auto elem_bound = [](float x, float scale) {
    return std::max(std::ldexp(std::fabs(double(x)), -4), std::ldexp(double(scale), -10)) * (1 + 4 * kU);
  };
  for (size_t i = 0; i < in.q.size(); ++i)
    ASSERT_LE(std::fabs(in.q[i] - double(f8e4m3_to_f32(q8[i])) * q_scale[i / c.dim]),
              elem_bound(in.q[i], q_scale[i / c.dim]));
  std::vector<float> s32(c.n_q * c.n_keys()), s8(s32.size());
  cpu::indexer_scores_reference(in.f32, s32.data());
  cpu::indexer_scores_reference(in.fp8, s8.data());
  for (int64_t t = 0; t < c.n_q; ++t)
    for (int64_t s = 0; s <= c.q_pos0 + t; ++s) {
      double bound = 0.0;
      for (int64_t h = 0; h < c.heads; ++h) {
        double e = 0.0;
        for (int64_t j = 0; j < c.dim; ++j) {
          const float x = in.q[(t * c.heads + h) * c.dim + j], y = in.k[s * c.dim + j];
          const double ex = elem_bound(x, q_scale[t * c.heads + h]), ey = elem_bound(y, in.k_scale[s]);
          e += std::fabs(x) * ey + std::fabs(y) * ex + ex * ey;
        }
        bound += std::fabs(in.w[t * c.heads + h]) * e;
      }
      const size_t i = t * c.n_keys() + s;
      ASSERT_NEAR(s8[i], s32[i], bound * (1 + 1e-6) + 4 * kU * std::fabs(s32[i])) << t << " " << s;
    }
}

// Fused indexer + top-k against reference scores -> reference top-k. Where scores lie within
// rounding of the k-th value the selected sets may differ, so instead: (1) counts match,
// (2) every selected index is valid, unique, and its reference score is >= the reference
// k-th score minus twice the row's largest tolerance (a swap needs both scores to move), and
// (3) the fused output is exactly top-k of the fast materialised scores (same arithmetic).
void check_indexer_topk(const IndexerParams& p, int64_t k) {
  std::vector<int32_t> fused(p.n_q * k, -7), of_fast(p.n_q * k, -7);
  cpu::indexer_topk(p, fused.data(), k);
  std::vector<float> fast(p.n_q * p.n_keys), ref(p.n_q * p.n_keys);
  cpu::indexer_scores(p, fast.data());
  cpu::topk({fast.data(), of_fast.data(), p.n_q, p.n_keys, p.q_pos0, k});
  ASSERT_EQ(fused, of_fast);
  cpu::indexer_scores_reference(p, ref.data());
  const auto tol = indexer_tolerance(p);
  for (int64_t t = 0; t < p.n_q; ++t) {
    const int64_t n = p.q_pos0 + t + 1;
    const float* r = ref.data() + t * p.n_keys;
    std::vector<float> sorted(r, r + n);
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const int64_t m = std::min(k, n);
    const double kth = sorted[m - 1];
    const double slack = 2 * *std::max_element(tol.begin() + t * p.n_keys, tol.begin() + t * p.n_keys + n);
    std::vector<bool> seen(n, false);
    for (int64_t i = 0; i < k; ++i) {
      const int32_t s = fused[t * k + i];
      if (i >= m) {
        ASSERT_EQ(s, -1) << "row " << t << " entry " << i;
        continue;
      }
      ASSERT_TRUE(s >= 0 && s < n) << "row " << t << " entry " << i << " index " << s;
      ASSERT_FALSE(seen[s]) << "row " << t << " repeats " << s;
      seen[s] = true;
      ASSERT_GE(r[s], kth - slack) << "row " << t << " index " << s;
    }
  }
}

TEST(IndexerCpu, FusedTopkSelectsTheLargestReferenceScores) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const auto& c : kIndexerCases)
    for (int64_t k : {1, 16, 64, 1000}) {  // 1000: larger than every context here
      SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " H " << c.heads
                                      << " d " << c.dim << " k " << k);
      auto in = make_indexer(rng, c);
      check_indexer_topk(in.f32, k);
      check_indexer_topk(in.fp8, k);
    }
}

TEST(IndexerCpu, FusedTopkIsBitwiseDeterministicAcrossThreadsAndSchedules) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  // 40 rows at H = 8 = 2 chunks of 32: one thread scores whole chunks, two threads split each chunk's keys
  // (fewer chunks than 2 x threads), so both schedules must give the same bits.
  for (const auto& c : {IndexerCase{40, 200, 8, 64}, IndexerCase{200, 100, 4, 64}}) {
    auto in = make_indexer(rng, c);
    for (const IndexerParams* p : {&in.f32, &in.fp8}) {
      std::vector<int32_t> a(c.n_q * 64), b(a.size()), again(a.size());
      std::vector<float> sa(c.n_q * c.n_keys()), sb(sa.size());
      with_threads(1, [&] {
        cpu::indexer_topk(*p, a.data(), 64);
        cpu::indexer_scores(*p, sa.data());
      });
      with_threads(2, [&] {
        cpu::indexer_topk(*p, b.data(), 64);
        cpu::indexer_topk(*p, again.data(), 64);
        cpu::indexer_scores(*p, sb.data());
      });
      ASSERT_EQ(a, b);
      ASSERT_EQ(b, again);
      ASSERT_EQ(0, std::memcmp(sa.data(), sb.data(), sa.size() * sizeof(float)));
    }
  }
}

TEST(IndexerCpu, TensorFrontRunsBothDtypesAndRejectsBadInput) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const IndexerCase c{6, 10, 4, 64};
  auto in = make_indexer(rng, c);
  Tensor q = Tensor::borrow(in.q.data(), {c.n_q, c.heads, c.dim}, DType::F32);
  Tensor k = Tensor::borrow(in.k.data(), {c.n_keys(), c.dim}, DType::F32);
  Tensor w = Tensor::borrow(in.w.data(), {c.n_q, c.heads}, DType::F32);
  Tensor q8 = Tensor::borrow(in.q8.data(), {c.n_q, c.heads, c.dim}, DType::F8_E4M3);
  Tensor k8 = Tensor::borrow(in.k8.data(), {c.n_keys(), c.dim}, DType::F8_E4M3);
  Tensor ks = Tensor::borrow(in.k_scale.data(), {c.n_keys()}, DType::F32);
  Tensor w8 = Tensor::borrow(in.w8.data(), {c.n_q, c.heads}, DType::F32);
  Tensor top = Tensor::zeros({c.n_q, 8}, DType::I32), scores = Tensor::zeros({c.n_q, c.n_keys()}, DType::F32);
  indexer_topk(q, k, Tensor(), w, c.q_pos0, top);
  std::vector<int32_t> want(c.n_q * 8);
  cpu::indexer_topk(in.f32, want.data(), 8);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), top.data<int32_t>()));
  indexer_topk(q8, k8, ks, w8, c.q_pos0, top);
  cpu::indexer_topk(in.fp8, want.data(), 8);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), top.data<int32_t>()));
  EXPECT_NO_THROW(indexer_scores(q8, k8, ks, w8, c.q_pos0, scores));
  EXPECT_THROW(indexer_topk(q, k, ks, w, c.q_pos0, top), Error);       // scale for f32 keys
  EXPECT_THROW(indexer_topk(q8, k8, Tensor(), w8, c.q_pos0, top), Error);  // fp8 without scale
  EXPECT_THROW(indexer_topk(q, k8, Tensor(), w, c.q_pos0, top), Error);    // mixed dtypes
  EXPECT_THROW(indexer_topk(q, k, Tensor(), w, c.q_pos0 + 3, top), Error);  // past the cache
  EXPECT_THROW(indexer_scores(q, k, Tensor(), w, c.q_pos0, top), Error);     // scores as I32
  std::vector<uint8_t> wide(c.n_q * 2 * 256), wide_k(c.n_keys() * 256);
  Tensor q8w = Tensor::borrow(wide.data(), {c.n_q, 2, 256}, DType::F8_E4M3);
  Tensor k8w = Tensor::borrow(wide_k.data(), {c.n_keys(), 256}, DType::F8_E4M3);
  Tensor w2 = Tensor::zeros({c.n_q, 2}, DType::F32);
  EXPECT_THROW(indexer_topk(q8w, k8w, ks, w2, c.q_pos0, top), Error);  // head_dim > 128
}

// ---------------------------------------------------------------------------------------
// Sparse attention

struct AttnCase {
  int64_t n_q, q_pos0, heads, kv_heads, dim;
  float sd;
};

struct AttnInputs {
  std::vector<float> q, k, v;
  int64_t cap;
};

AttnInputs make_attention(Rng& rng, const AttnCase& c) {
  AttnInputs in;
  in.cap = c.q_pos0 + c.n_q + 5;
  in.q = rng.normal(c.n_q * c.heads * c.dim, c.sd);
  in.k = rng.normal(c.kv_heads * in.cap * c.dim, c.sd);
  in.v = rng.normal(c.kv_heads * in.cap * c.dim);
  return in;
}

// The bound of test_ops_cpu's check_attention, over the n keys a query actually uses:
// scores err by score_err = gamma_d * scale * d * max|q| * max|k|, moving each softmax weight
// by at most twice that relatively; exp_fast, the normalisation and the weighted sum over n
// values add (n + 8) u. Output error <= 2 max|v| (2 score_err + (n + 8) u).
struct AttnTolerance {
  double out, lse;
};
AttnTolerance attention_tolerance(const AttnInputs& in, const AttnCase& c, float scale, int64_t n) {
  double qmax = 0, kmax = 0, vmax = 0;
  for (float x : in.q) qmax = std::max(qmax, double(std::fabs(x)));
  for (float x : in.k) kmax = std::max(kmax, double(std::fabs(x)));
  for (float x : in.v) vmax = std::max(vmax, double(std::fabs(x)));
  const double score_err = gamma(c.dim) * scale * c.dim * qmax * kmax;
  return {2 * vmax * (2 * score_err + (n + 8) * kU), score_err + (n + 8) * kU + 1e-6};
}

SparseAttentionParams sparse_params(const AttnInputs& in, const AttnCase& c, const std::vector<int32_t>& topk,
                                    int64_t k, float scale, std::vector<float>& out, std::vector<float>& lse) {
  out.assign(c.n_q * c.heads * c.dim, NAN);
  lse.assign(c.n_q * c.heads, NAN);
  return {in.q.data(), in.k.data(), in.v.data(), topk.data(), out.data(), lse.data(), c.n_q, c.heads,
          c.kv_heads,  c.dim,       in.cap,      c.q_pos0,    k,          scale};
}

// Random index lists: up to k distinct causal positions in random order, -1 scattered in.
std::vector<int32_t> random_topk(Rng& rng, const AttnCase& c, int64_t k) {
  std::vector<int32_t> topk(c.n_q * k, -1);
  for (int64_t t = 0; t < c.n_q; ++t) {
    std::vector<int32_t> pos(c.q_pos0 + t + 1);
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), rng.gen);
    const int64_t m = std::min<int64_t>(k - k / 4, pos.size());  // leave some -1 entries
    std::copy(pos.begin(), pos.begin() + m, topk.begin() + t * k);
    std::shuffle(topk.begin() + t * k, topk.begin() + (t + 1) * k, rng.gen);
  }
  return topk;
}

TEST(SparseAttentionCpu, MatchesReferenceOnRandomIndexLists) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const auto& c : {AttnCase{1, 0, 9, 3, 64, 1.0f}, AttnCase{1, 500, 9, 3, 64, 1.0f},
                        AttnCase{37, 20, 4, 1, 32, 2.0f}, AttnCase{19, 300, 8, 8, 128, 3.0f}})
    for (int64_t k : {1, 33, 256}) {
      SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " k " << k);
      auto in = make_attention(rng, c);
      const auto topk = random_topk(rng, c, k);
      const float scale = 1.0f / std::sqrt(float(c.dim));
      std::vector<float> fast, ref, lf, lr;
      cpu::sparse_attention(sparse_params(in, c, topk, k, scale, fast, lf));
      cpu::sparse_attention_reference(sparse_params(in, c, topk, k, scale, ref, lr));
      const auto tol = attention_tolerance(in, c, scale, k);
      for (size_t i = 0; i < fast.size(); ++i) ASSERT_NEAR(fast[i], ref[i], tol.out) << i;
      for (size_t i = 0; i < lf.size(); ++i) {
        if (std::isinf(lr[i])) {
          ASSERT_EQ(lf[i], lr[i]) << i;  // k = 1 with the single entry -1
        } else {
          ASSERT_NEAR(lf[i], lr[i], tol.lse) << i;
        }
      }
    }
}

// Every causal position selected (k >= context, in shuffled order with -1 padding) is dense
// causal attention.
TEST(SparseAttentionCpu, SelectingEveryPositionEqualsDenseAttention) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const auto& c : {AttnCase{1, 0, 9, 3, 64, 1.0f}, AttnCase{45, 0, 9, 3, 64, 1.0f},
                        AttnCase{20, 17, 4, 1, 32, 2.0f}, AttnCase{1, 260, 2, 2, 128, 3.0f}}) {
    const int64_t ctx = c.q_pos0 + c.n_q, k = ctx + 7;
    auto in = make_attention(rng, c);
    std::vector<int32_t> topk(c.n_q * k, -1);
    for (int64_t t = 0; t < c.n_q; ++t) {
      std::iota(topk.begin() + t * k, topk.begin() + t * k + c.q_pos0 + t + 1, 0);
      std::shuffle(topk.begin() + t * k, topk.begin() + (t + 1) * k, rng.gen);
    }
    const float scale = 1.0f / std::sqrt(float(c.dim));
    std::vector<float> sparse, lse_s, dense(c.n_q * c.heads * c.dim), lse_d(c.n_q * c.heads);
    cpu::sparse_attention(sparse_params(in, c, topk, k, scale, sparse, lse_s));
    cpu::attention_reference({in.q.data(), in.k.data(), in.v.data(), dense.data(), lse_d.data(), c.n_q,
                              c.heads, c.kv_heads, c.dim, in.cap, c.q_pos0, scale});
    const auto tol = attention_tolerance(in, c, scale, ctx);
    for (size_t i = 0; i < dense.size(); ++i) ASSERT_NEAR(sparse[i], dense[i], tol.out) << i;
    for (size_t i = 0; i < lse_d.size(); ++i) ASSERT_NEAR(lse_s[i], lse_d[i], tol.lse) << i;
  }
}

TEST(SparseAttentionCpu, QueryWithNoValidIndexGivesZerosAndMinusInfLse) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const AttnCase c{3, 10, 4, 2, 16, 1.0f};
  auto in = make_attention(rng, c);
  // Row 0 is empty, row 1 selects one key, row 2 three.
  const std::vector<int32_t> topk = {-1, -1, -1, -1, 11, -1, 0, 12, 3};
  std::vector<float> fast, ref, lf, lr;
  cpu::sparse_attention(sparse_params(in, c, topk, 3, 0.25f, fast, lf));
  cpu::sparse_attention_reference(sparse_params(in, c, topk, 3, 0.25f, ref, lr));
  for (int64_t i = 0; i < c.heads * c.dim; ++i) {
    ASSERT_EQ(fast[i], 0.0f);
    ASSERT_EQ(ref[i], 0.0f);
  }
  for (int64_t h = 0; h < c.heads; ++h) {
    EXPECT_EQ(lf[h], kNegInf);
    EXPECT_EQ(lr[h], kNegInf);
  }
  // A single selected key has softmax weight exactly 1: the output is that key's value row.
  const int64_t group = c.heads / c.kv_heads;
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t j = 0; j < c.dim; ++j) {
      const float want = in.v[((h / group) * in.cap + 11) * c.dim + j];
      ASSERT_EQ(fast[(c.heads + h) * c.dim + j], want);
      ASSERT_EQ(ref[(c.heads + h) * c.dim + j], want);
    }
  const double tol = attention_tolerance(in, c, 0.25f, 3).out;
  for (size_t i = 2 * c.heads * c.dim; i < fast.size(); ++i) ASSERT_NEAR(fast[i], ref[i], tol);
}

TEST(SparseAttentionCpu, RejectsIndicesPastTheQueryOrBelowMinusOne) {
  Rng rng;
  const AttnCase c{2, 5, 2, 1, 8, 1.0f};
  auto in = make_attention(rng, c);
  std::vector<float> out, lse;
  for (const std::vector<int32_t>& topk : {std::vector<int32_t>{0, 5, 6, 7},  // 7 > position 6
                                           std::vector<int32_t>{-2, 0, 1, 2}}) {
    EXPECT_THROW(cpu::sparse_attention(sparse_params(in, c, topk, 2, 1.0f, out, lse)), Error);
    EXPECT_THROW(cpu::sparse_attention_reference(sparse_params(in, c, topk, 2, 1.0f, out, lse)), Error);
  }
  // The same through the Tensor front, whose message names the query and the key.
  std::vector<int32_t> bad = {0, 5, 6, 7};
  Tensor q = Tensor::borrow(in.q.data(), {c.n_q, c.heads, c.dim}, DType::F32);
  Tensor k = Tensor::borrow(in.k.data(), {c.kv_heads, in.cap, c.dim}, DType::F32);
  Tensor v = Tensor::borrow(in.v.data(), {c.kv_heads, in.cap, c.dim}, DType::F32);
  Tensor top = Tensor::borrow(bad.data(), {c.n_q, 2}, DType::I32);
  Tensor o = Tensor::zeros({c.n_q, c.heads, c.dim}, DType::F32);
  try {
    sparse_attention(q, k, v, top, c.q_pos0, 1.0f, o);
    ADD_FAILURE() << "no error for key 7 selected by the query at position 6";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("selects key 7"), std::string::npos) << e.what();
  }
  bad = {0, 5, 6, -1};
  EXPECT_NO_THROW(sparse_attention(q, k, v, top, c.q_pos0, 1.0f, o));
  Tensor top3 = Tensor::zeros({3, 2}, DType::I32);
  EXPECT_THROW(sparse_attention(q, k, v, top3, c.q_pos0, 1.0f, o), Error);
}

TEST(SparseAttentionCpu, BitwiseDeterministicAcrossThreadCounts) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const AttnCase c{50, 400, 9, 3, 64, 1.0f};
  auto in = make_attention(rng, c);
  const auto topk = random_topk(rng, c, 256);
  std::vector<float> a, b, la, lb;
  with_threads(1, [&] { cpu::sparse_attention(sparse_params(in, c, topk, 256, 0.125f, a, la)); });
  with_threads(2, [&] { cpu::sparse_attention(sparse_params(in, c, topk, 256, 0.125f, b, lb)); });
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
}

// DSA end to end on one layer: indexer top-k feeds sparse attention; with k >= context the
// layer is dense attention whatever the indexer says.
TEST(DsaCpu, IndexerTopkIntoSparseAttentionWithFullKIsDense) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const IndexerCase ic{33, 0, 4, 64};
  const AttnCase ac{33, 0, 9, 3, 64, 1.0f};
  auto idx = make_indexer(rng, ic);
  auto in = make_attention(rng, ac);
  const int64_t k = 64;
  std::vector<int32_t> topk(ic.n_q * k);
  cpu::indexer_topk(idx.f32, topk.data(), k);
  std::vector<float> sparse, lse, dense(ac.n_q * ac.heads * ac.dim);
  cpu::sparse_attention(sparse_params(in, ac, topk, k, 0.125f, sparse, lse));
  cpu::attention_reference({in.q.data(), in.k.data(), in.v.data(), dense.data(), nullptr, ac.n_q, ac.heads,
                            ac.kv_heads, ac.dim, in.cap, ac.q_pos0, 0.125f});
  const auto tol = attention_tolerance(in, ac, 0.125f, ac.n_q);
  for (size_t i = 0; i < dense.size(); ++i) ASSERT_NEAR(sparse[i], dense[i], tol.out) << i;
}

}  // namespace
}  // namespace ic::ops
