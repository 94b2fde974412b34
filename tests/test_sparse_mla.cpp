// The CPU reference of sparse MLA (absorbed MQA form): against cases whose answer is known in
// closed form, its parallel CPU path bitwise, its edge cases and its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "op_test_util.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/sparse_mla.h"

namespace ic::ops {
namespace {

using test::Rng;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Mla {
  int64_t n_q, heads, n_kv, k;
  std::vector<uint16_t> q, kv;
  std::vector<int32_t> idx;
  std::vector<float> out, lse;

  Mla(Rng& rng, int64_t n_q_, int64_t heads_, int64_t n_kv_, int64_t k_) : n_q(n_q_), heads(heads_), n_kv(n_kv_), k(k_) {
    for (float x : rng.normal(n_q * heads * kMlaDimQK)) q.push_back(f32_to_bf16(x));
    for (float x : rng.normal(n_kv * kMlaDimQK)) kv.push_back(f32_to_bf16(x));
    idx.assign(n_q * k, -1);
    std::uniform_int_distribution<int32_t> row(-1, static_cast<int32_t>(n_kv - 1));  // -1 scattered in
    for (auto& s : idx) s = row(rng.gen);
  }
  SparseMlaParams params(float scale) {
    out.assign(n_q * heads * kMlaDimV, kNaN);
    lse.assign(n_q * heads, kNaN);
    return {q.data(), kv.data(), idx.data(), out.data(), lse.data(), n_q, heads, n_kv, k, scale};
  }
  double score(int64_t t, int64_t h, int32_t s, float scale) const {
    double acc = 0;
    for (int64_t c = 0; c < kMlaDimQK; ++c)
      acc += double(bf16_to_f32(q[(t * heads + h) * kMlaDimQK + c])) * bf16_to_f32(kv[s * kMlaDimQK + c]);
    return acc * scale;
  }
  double value(int32_t s, int64_t c) const { return bf16_to_f32(kv[s * kMlaDimQK + c]); }
};

TEST(SparseMlaCpu, ParallelPathEqualsReferenceBitwise) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 7, 16, 300, 100);
  cpu::sparse_mla_reference(m.params(0.04f));
  const auto ref = m.out, lse_ref = m.lse;
  cpu::sparse_mla(m.params(0.04f));
  EXPECT_EQ(m.out, ref);
  EXPECT_EQ(m.lse, lse_ref);
}

// Scale 0: every selected row weighs the same, so the output is the mean of the selected value
// rows (a duplicate counted twice) and the LSE is log(count).
TEST(SparseMlaCpu, ZeroScaleAveragesTheSelectedRows) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 5, 3, 50, 40);
  m.idx[0] = m.idx[1] = 9;  // a duplicate in query 0
  cpu::sparse_mla_reference(m.params(0.0f));
  for (int64_t t = 0; t < m.n_q; ++t) {
    int64_t n = 0;
    std::vector<double> mean(kMlaDimV, 0.0);
    for (int64_t i = 0; i < m.k; ++i) {
      const int32_t s = m.idx[t * m.k + i];
      if (s < 0) continue;
      ++n;
      for (int64_t c = 0; c < kMlaDimV; ++c) mean[c] += m.value(s, c);
    }
    ASSERT_GT(n, 0);
    for (int64_t h = 0; h < m.heads; ++h) {
      ASSERT_NEAR(m.lse[t * m.heads + h], std::log(double(n)), 1e-6);
      for (int64_t c = 0; c < kMlaDimV; ++c)
        ASSERT_NEAR(m.out[(t * m.heads + h) * kMlaDimV + c], mean[c] / n, 1e-6) << t << " " << h << " " << c;
    }
  }
}

// Two keys, one listed twice: weights 2 e^a : e^b, computed here independently of the reference.
TEST(SparseMlaCpu, TwoKeysWithADuplicateMatchClosedForm) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 1, 4, 20, 5);
  m.idx = {3, -1, 11, 3, -1};
  const float scale = 0.05f;
  cpu::sparse_mla_reference(m.params(scale));
  for (int64_t h = 0; h < m.heads; ++h) {
    const double a = m.score(0, h, 3, scale), b = m.score(0, h, 11, scale);
    const double mx = std::max(a, b), wa = 2 * std::exp(a - mx), wb = std::exp(b - mx);
    ASSERT_NEAR(m.lse[h], mx + std::log(wa + wb), 1e-5);
    for (int64_t c = 0; c < kMlaDimV; ++c)
      ASSERT_NEAR(m.out[h * kMlaDimV + c], (wa * m.value(3, c) + wb * m.value(11, c)) / (wa + wb), 1e-6);
  }
}

// The order of the index list does not matter (up to double rounding).
TEST(SparseMlaCpu, IndexOrderDoesNotMatter) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 3, 8, 400, 129);
  cpu::sparse_mla_reference(m.params(0.1f));
  const auto out = m.out, lse = m.lse;
  for (int64_t t = 0; t < m.n_q; ++t) std::shuffle(m.idx.begin() + t * m.k, m.idx.begin() + (t + 1) * m.k, rng.gen);
  cpu::sparse_mla_reference(m.params(0.1f));
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(m.out[i], out[i], 1e-6) << i;
  for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(m.lse[i], lse[i], 1e-5) << i;
}

TEST(SparseMlaCpu, NoValidIndexGivesZerosAndMinusInfLse) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 2, 4, 30, 6);
  std::fill(m.idx.begin(), m.idx.begin() + 6, -1);  // query 0: nothing selected
  cpu::sparse_mla(m.params(0.1f));
  for (int64_t h = 0; h < m.heads; ++h) {
    EXPECT_EQ(m.lse[h], -std::numeric_limits<float>::infinity());
    for (int64_t c = 0; c < kMlaDimV; ++c) ASSERT_EQ(m.out[h * kMlaDimV + c], 0.0f);
  }
}

TEST(SparseMlaCpu, RejectsIndicesOutsideTheCache) {
  Rng rng;
  Mla m(rng, 2, 4, 30, 6);
  for (int32_t bad : {30, 1000, -2}) {
    m.idx[7] = bad;
    EXPECT_THROW(cpu::sparse_mla(m.params(0.1f)), Error) << bad;
    EXPECT_THROW(cpu::sparse_mla_reference(m.params(0.1f)), Error) << bad;
  }
}

TEST(SparseMlaCpu, TensorFrontChecksShapesAndRuns) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 3, 5, 40, 8);
  const Tensor q = Tensor::borrow(m.q.data(), {3, 5, kMlaDimQK}, DType::BF16);
  const Tensor kv = Tensor::borrow(m.kv.data(), {40, kMlaDimQK}, DType::BF16);
  const Tensor idx = Tensor::borrow(m.idx.data(), {3, 8}, DType::I32);
  Tensor out = Tensor::empty({3, 5, kMlaDimV}, DType::F32), lse = Tensor::empty({3, 5}, DType::F32);
  sparse_mla(q, kv, idx, 0.1f, out, &lse);
  cpu::sparse_mla_reference(m.params(0.1f));
  EXPECT_TRUE(std::equal(m.out.begin(), m.out.end(), out.data<float>()));
  EXPECT_TRUE(std::equal(m.lse.begin(), m.lse.end(), lse.data<float>()));

  Tensor out_bad = Tensor::empty({3, 5, 576}, DType::F32);
  EXPECT_THROW(sparse_mla(q, kv, idx, 0.1f, out_bad, &lse), Error);
  const Tensor kv_narrow = Tensor::borrow(m.kv.data(), {72, 320}, DType::BF16);
  EXPECT_THROW(sparse_mla(q, kv_narrow, idx, 0.1f, out, &lse), Error);
  const Tensor idx_short = Tensor::borrow(m.idx.data(), {2, 8}, DType::I32);
  EXPECT_THROW(sparse_mla(q, kv, idx_short, 0.1f, out, &lse), Error);
  const Tensor q_f32 = Tensor::empty({3, 5, kMlaDimQK}, DType::F32);
  EXPECT_THROW(sparse_mla(q_f32, kv, idx, 0.1f, out, &lse), Error);
}

// ---- fp8 cache (656-byte rows) ----

std::vector<uint8_t> quantize_cache(const std::vector<uint16_t>& kv, int64_t n_kv) {
  std::vector<uint8_t> kv8(n_kv * kMlaFp8RowBytes);
  for (int64_t r = 0; r < n_kv; ++r) quantize_mla_fp8(kv.data() + r * kMlaDimQK, kv8.data() + r * kMlaFp8RowBytes);
  return kv8;
}

// Each latent value comes back within half an e4m3 step of its block (relative 2^-4, or the
// subnormal step 2^-9 scale / 2 near zero) plus the bf16 rounding; RoPE values exactly.
TEST(SparseMlaFp8, RoundTripWithinTheQuantisationStep) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 1, 1, 50, 1);
  for (int c = 128; c < 256; ++c) m.kv[3 * kMlaDimQK + c] = 0;  // an all-zero block: scale 1, zeros back
  const auto kv8 = quantize_cache(m.kv, m.n_kv);
  for (int64_t r = 0; r < m.n_kv; ++r) {
    const uint8_t* row8 = kv8.data() + r * kMlaFp8RowBytes;
    float scales[4];
    std::memcpy(scales, row8 + 512, sizeof scales);
    std::vector<uint16_t> back(kMlaDimQK);
    dequantize_mla_fp8(row8, back.data());
    for (int64_t c = 0; c < kMlaDimQK; ++c) {
      const double x = bf16_to_f32(m.kv[r * kMlaDimQK + c]), y = bf16_to_f32(back[c]);
      if (c >= kMlaDimV) {
        ASSERT_EQ(back[c], m.kv[r * kMlaDimQK + c]) << r << " " << c;
        continue;
      }
      const double s = scales[c / 128];
      ASSERT_LE(std::fabs(y - x), std::fabs(x) * (1.0 / 16 + 1.0 / 256) + s * std::ldexp(1.0, -10) * 1.01) << r << " " << c;
    }
  }
  float s3[4];
  std::memcpy(s3, kv8.data() + 3 * kMlaFp8RowBytes + 512, sizeof s3);
  EXPECT_EQ(s3[1], 1.0f);
}

// An fp8 cache attends exactly like its dequantised bf16 copy, on both CPU paths.
TEST(SparseMlaFp8, CacheEqualsItsDequantisedCopyBitwise) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 4, 16, 200, 90);
  const auto kv8 = quantize_cache(m.kv, m.n_kv);
  for (int64_t r = 0; r < m.n_kv; ++r) dequantize_mla_fp8(kv8.data() + r * kMlaFp8RowBytes, m.kv.data() + r * kMlaDimQK);
  cpu::sparse_mla_reference(m.params(0.05f));
  const auto ref = m.out, lse_ref = m.lse;
  SparseMlaParams p = m.params(0.05f);
  p.kv = nullptr;
  p.kv_fp8 = kv8.data();
  cpu::sparse_mla_reference(p);
  EXPECT_EQ(m.out, ref);
  EXPECT_EQ(m.lse, lse_ref);
  p = m.params(0.05f);
  p.kv = nullptr;
  p.kv_fp8 = kv8.data();
  cpu::sparse_mla(p);
  EXPECT_EQ(m.out, ref);
  EXPECT_EQ(m.lse, lse_ref);
}

TEST(SparseMlaFp8, TensorFrontTakesTheByteRows) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  Mla m(rng, 3, 5, 40, 8);
  auto kv8 = quantize_cache(m.kv, m.n_kv);
  const Tensor q = Tensor::borrow(m.q.data(), {3, 5, kMlaDimQK}, DType::BF16);
  const Tensor kv = Tensor::borrow(kv8.data(), {40, kMlaFp8RowBytes}, DType::F8_E4M3);
  const Tensor idx = Tensor::borrow(m.idx.data(), {3, 8}, DType::I32);
  Tensor out = Tensor::empty({3, 5, kMlaDimV}, DType::F32), lse = Tensor::empty({3, 5}, DType::F32);
  sparse_mla(q, kv, idx, 0.1f, out, &lse);
  SparseMlaParams p = m.params(0.1f);
  p.kv = nullptr;
  p.kv_fp8 = kv8.data();
  cpu::sparse_mla_reference(p);
  EXPECT_TRUE(std::equal(m.out.begin(), m.out.end(), out.data<float>()));
  EXPECT_TRUE(std::equal(m.lse.begin(), m.lse.end(), lse.data<float>()));
  const Tensor kv_narrow = Tensor::borrow(kv8.data(), {41, kMlaDimQK}, DType::F8_E4M3);
  EXPECT_THROW(sparse_mla(q, kv_narrow, idx, 0.1f, out, &lse), Error);
}

}  // namespace
}  // namespace ic::ops
