// Fast CPU operations against their plain references on fresh random inputs. Tolerances come
// from float32 rounding bounds: a length-n dot product in f32 errs by at most
// gamma_n * sum|a_i b_i|, gamma_n = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability
// of Numerical Algorithms, eq. 3.5); the fast kernels also use exp_fast (< 2e-7 relative).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "op_test_util.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/layer_norm.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/simd.h"
#include "ops/swiglu.h"
#include "ops/token_logprob.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;

using test::Rng;

TEST(SimdCpu, ExpFastWithinTwoUlpOverTheRangeUsedBySoftmax) {
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double ref = std::exp(static_cast<double>(x));
    EXPECT_LE(std::fabs(exp_fast(x) - ref), 4 * kU * ref) << x;
  }
  EXPECT_EQ(exp_fast(-INFINITY), 0.0f);
  EXPECT_EQ(exp_fast(-1000.0f), 0.0f);
}

TEST(RmsNormCpu, MatchesReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t dim : {1, 7, 64, 576, 1000}) {
    const int64_t n = 13;
    auto x = rng.normal(n * dim, 3.0f), w = rng.normal(dim);
    std::vector<float> fast(x.size()), ref(x.size());
    cpu::rms_norm({x.data(), w.data(), fast.data(), n, dim, 1e-5f});
    cpu::rms_norm_reference({x.data(), w.data(), ref.data(), n, dim, 1e-5f});
    // Sum of squares: gamma_dim relative; sqrt and two products add a few u.
    const double rel = gamma(dim) / 2 + 4 * kU;
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(fast[i], ref[i], rel * std::fabs(ref[i]) + 1e-30) << i;
  }
}

TEST(TokenLogprobCpu, MatchesLongDoubleDefinitionAndNormalises) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t V : {1, 7, 1000, 49152}) {
    const int64_t n = 5;
    auto logits = rng.normal(n * V, 4.0f);
    std::vector<int32_t> target(n);
    for (int64_t i = 0; i < n; ++i) target[i] = static_cast<int32_t>(rng.gen() % V);
    std::vector<float> out(n, NAN);
    cpu::token_logprob({logits.data(), target.data(), out.data(), n, V});
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits.data() + i * V;
      long double mx = row[0], sum = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max<long double>(mx, row[v]);
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<long double>(row[v]) - mx);
      const long double want = row[target[i]] - mx - std::log(sum);
      // Double arithmetic errs by ~V 2^-53 relative in the sum; the result is then rounded to f32.
      ASSERT_NEAR(out[i], static_cast<double>(want), kU * std::fabs(static_cast<double>(want)) + 1e-9) << i;
    }
  }
  // Every target of one row: the probabilities sum to 1.
  const int64_t V = 300;
  auto row = rng.normal(V, 4.0f);
  std::vector<float> all(V * V);
  std::vector<int32_t> target(V);
  for (int64_t v = 0; v < V; ++v) {
    std::copy(row.begin(), row.end(), all.begin() + v * V);
    target[v] = static_cast<int32_t>(v);
  }
  std::vector<float> out(V);
  cpu::token_logprob({all.data(), target.data(), out.data(), V, V});
  double total = 0;
  for (float lp : out) total += std::exp(static_cast<double>(lp));
  EXPECT_NEAR(total, 1.0, 4 * V * kU);
}

TEST(TokenLogprobFront, RejectsTargetsOutsideTheVocabularyAndShapeMismatch) {
  std::vector<float> logits(2 * 10, 0.0f), out(2);
  std::vector<int32_t> good{3, 9}, bad{3, 10}, neg{-1, 0};
  Tensor l = Tensor::borrow(logits.data(), {2, 10}, DType::F32), o = Tensor::borrow(out.data(), {2}, DType::F32);
  Tensor g = Tensor::borrow(good.data(), {2}, DType::I32);
  token_logprob(l, g, o);
  EXPECT_NEAR(out[0], -std::log(10.0), 1e-6);
  for (auto* t : {&bad, &neg}) {
    Tensor tt = Tensor::borrow(t->data(), {2}, DType::I32);
    EXPECT_THROW(token_logprob(l, tt, o), Error);
  }
  Tensor short_t = Tensor::borrow(good.data(), {1}, DType::I32);
  EXPECT_THROW(token_logprob(l, short_t, o), Error);
}

TEST(LayerNormCpu, MatchesLongDoubleDefinition) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t dim : {1, 8, 64, 128, 577}) {
    const int64_t n = 11;
    auto x = rng.normal(n * dim, 3.0f), w = rng.normal(dim), b = rng.normal(dim);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += 5.0f;  // an offset the mean must remove
    std::vector<float> out(x.size());
    cpu::layer_norm({x.data(), w.data(), b.data(), out.data(), n, dim, 1e-6f});
    for (int64_t r = 0; r < n; ++r) {
      long double mean = 0, var = 0;
      for (int64_t c = 0; c < dim; ++c) mean += x[r * dim + c];
      mean /= dim;
      for (int64_t c = 0; c < dim; ++c) var += (x[r * dim + c] - mean) * (x[r * dim + c] - mean);
      const long double inv = 1.0L / std::sqrt(var / dim + 1e-6L);
      for (int64_t c = 0; c < dim; ++c) {
        const long double z = (x[r * dim + c] - mean) * inv;
        const long double want = z * w[c] + b[c];
        // Double statistics are exact to f32 precision; then three f32 roundings (z, the
        // product, the sum), each at most u of its own magnitude.
        const double tol = 3 * kU * (std::fabs(static_cast<double>(z * w[c])) + std::fabs(static_cast<double>(want))) + 1e-30;
        ASSERT_NEAR(out[r * dim + c], static_cast<double>(want), tol) << r << "," << c;
      }
    }
  }
}

TEST(RopeCpu, MatchesReferenceForBothStylesAndPreservesNorms) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalf})
    for (int64_t rot : {64, 32}) {
      const int64_t n = 9, heads = 3, hd = 64;
      auto x = rng.normal(n * heads * hd);
      std::vector<int32_t> pos(n);
      for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(rng.gen() % 200000);
      auto fast = x, ref = x;
      cpu::rope({fast.data(), pos.data(), n, heads, hd, heads * hd, rot, 100000.0f, style});
      cpu::rope_reference({ref.data(), pos.data(), n, heads, hd, heads * hd, rot, 100000.0f, style});
      for (int64_t t = 0; t < n * heads; ++t) {
        double n0 = 0, n1 = 0;
        for (int64_t c = 0; c < hd; ++c) {
          const size_t i = t * hd + c;
          // cos/sin rounded to f32 (u each), then a 2-term sum: |err| <= 4u * |pair norm|.
          ASSERT_NEAR(fast[i], ref[i], 6 * kU * (std::fabs(x[i]) + std::fabs(ref[i]) + 1.0)) << i;
          n0 += double(x[i]) * x[i];
          n1 += double(ref[i]) * ref[i];
          if (c >= rot) ASSERT_EQ(fast[i], x[i]);  // dims past rot_dim are untouched
        }
        ASSERT_NEAR(n0, n1, 1e-5 * n0);
      }
    }
}

TEST(RopeCpu, PositionZeroIsIdentity) {
  Rng rng;
  auto x = rng.normal(2 * 64);
  auto y = x;
  const int32_t pos[2] = {0, 0};
  cpu::rope({y.data(), pos, 2, 1, 64, 64, 64, 10000.0f, RopeStyle::kAdjacent});
  EXPECT_EQ(x, y);
}

TEST(SwigluCpu, MatchesReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  auto g = rng.normal(4099, 4.0f), u = rng.normal(4099);
  std::vector<float> fast(g.size()), ref(g.size());
  cpu::swiglu({g.data(), u.data(), fast.data(), 4099});
  cpu::swiglu_reference({g.data(), u.data(), ref.data(), 4099});
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(fast[i], ref[i], 8 * kU * std::fabs(ref[i]) + 1e-30) << g[i];
}

// Worst-case bound for attention output element (i, h, c) against the double reference:
// scores err by gamma_d * scale * sum|q k|, which perturbs each softmax weight by at most
// twice that relatively; exp_fast, the running sum over n keys and the weighted sum of v add
// (n + 8) u relatively. Output error <= max|v| * (2 * score_err + (n + 8) u) * 2.
void check_attention(Rng& rng, int64_t n_q, int64_t q_pos0, int64_t heads, int64_t kv_heads, int64_t hd,
                     float sd) {
  const int64_t cap = q_pos0 + n_q + 5;
  auto q = rng.normal(n_q * heads * hd, sd), k = rng.normal(kv_heads * cap * hd, sd),
       v = rng.normal(kv_heads * cap * hd);
  std::vector<float> fast(q.size(), NAN), ref(q.size(), NAN), lse_f(n_q * heads), lse_r(n_q * heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  AttentionParams p{q.data(), k.data(), v.data(), fast.data(), lse_f.data(), n_q, heads, kv_heads, hd, cap,
                    q_pos0, scale};
  cpu::attention(p);
  p.out = ref.data();
  p.lse = lse_r.data();
  cpu::attention_reference(p);
  double vmax = 0, qk = 0;
  for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
  for (int64_t i = 0; i < n_q * heads; ++i) {
    double qn = 0;
    for (int64_t c = 0; c < hd; ++c) qn = std::max(qn, double(std::fabs(q[i * hd + c])));
    qk = std::max(qk, qn);
  }
  double kmax = 0;
  for (float x : k) kmax = std::max(kmax, double(std::fabs(x)));
  const double score_err = gamma(hd) * scale * hd * qk * kmax;
  const double n = q_pos0 + n_q;
  const double tol = 2 * vmax * (2 * score_err + (n + 8) * kU);
  for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(fast[i], ref[i], tol) << "element " << i;
  for (size_t i = 0; i < lse_f.size(); ++i) ASSERT_NEAR(lse_f[i], lse_r[i], score_err + (n + 8) * kU + 1e-6);
}

TEST(AttentionCpu, MatchesReferenceAcrossShapes) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  check_attention(rng, 1, 0, 9, 3, 64, 1.0f);     // first token
  check_attention(rng, 1, 300, 9, 3, 64, 1.0f);   // decode step
  check_attention(rng, 2, 5000, 9, 3, 64, 1.0f);  // decode, two positions, threaded
  check_attention(rng, 1, 40, 4, 2, 48, 1.0f);    // decode, head_dim not a multiple of 16
  check_attention(rng, 37, 0, 9, 3, 64, 1.0f);    // prefill, not a multiple of 8 or 16
  check_attention(rng, 20, 17, 4, 1, 32, 2.0f);   // prefill after a cached prefix, MQA
  check_attention(rng, 64, 0, 2, 2, 128, 3.0f);   // MHA, peaked softmax
}

// The same shapes on every instruction-set path this CPU has (ops/simd_dispatch.h: AVX-512 with
// 64-byte vectors, AVX2 and baseline with pairs of 32-byte ones), each against the reference.
TEST(AttentionCpu, EveryIsaPathMatchesReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  test::for_each_cpu_isa([&] {
    check_attention(rng, 1, 300, 9, 3, 64, 1.0f);  // decode (attend_one)
    check_attention(rng, 37, 0, 9, 3, 64, 1.0f);   // prefill (attend_tile)
    check_attention(rng, 20, 17, 4, 1, 48, 2.0f);  // head_dim not a multiple of 16
  });
}

TEST(KvStoreCpu, WritesHeadMajorRows) {
  const int64_t n = 3, heads = 2, hd = 4, cap = 8;
  std::vector<float> src(n * heads * hd), cache(heads * cap * hd, -1.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  cpu::kv_store({src.data(), cache.data(), n, heads, hd, cap, 2});
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < heads; ++g)
      for (int64_t c = 0; c < hd; ++c)
        EXPECT_EQ(cache[(g * cap + 2 + t) * hd + c], src[(t * heads + g) * hd + c]);
  EXPECT_EQ(cache[0], -1.0f);
}

}  // namespace
}  // namespace ic::ops
