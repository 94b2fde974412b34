// The CUDA sparse attention kernels (GQA over an f32 or bf16 cache; absorbed MLA over a bf16
// latent cache) against their plain CPU references, on fresh random inputs. Calls go through the
// op fronts with tensors on the GPU, so this file builds without CUDA; every test skips when no
// GPU is usable. Outputs are poisoned with NaN first, so an element never written fails.
//
// Tolerances, from rounding bounds (u = 2^-24 for f32, Higham eq. 3.5 for gamma_n):
// - a score is a length-d f32 dot product: it errs by at most
//   e = gamma_d * scale * sum_c |q_c k_c| <= gamma_d * scale * |q|_2 |k|_2 (natural-log units);
// - each softmax weight then moves by at most 2e relatively, and the exp, the normalisation and
//   the n-term weighted sum add (n + 32) u (expf is within 2 ulp; the split merge adds a few);
// - the MLA kernel also rounds each weight to bf16 before the P V product (relative 2^-9), while
//   its normaliser sums the unrounded f32 weights: another 2^-9 relatively on every weight.
// So |out - ref| <= max|v| (2e + (n + 32) u [+ 2^-9]) and |lse - ref| <= e + (n + 32) u.
// Each kernel also runs twice on the same input and must agree bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "op_test_util.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/sparse_attention.h"
#include "ops/sparse_mla.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;
using test::Rng;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kBf16U = 1.0 / 512;  // unit roundoff of bf16, 2^-9

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

template <typename T>
Tensor to_gpu(const std::vector<T>& v, const Shape& s, DType t) {
  return Tensor::borrow(const_cast<T*>(v.data()), s, t).to(Device::CUDA);
}
Tensor nan_gpu(const Shape& s) {
  return to_gpu(std::vector<float>(static_cast<size_t>(s.numel()), kNaN), s, DType::F32);
}
std::vector<float> to_host(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_bf16(v[i]);
  return r;
}
std::vector<float> widen(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_to_f32(v[i]);
  return r;
}
double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}
// Largest Euclidean norm of the rows of v, each `d` long.
double max_row_norm(const std::vector<float>& v, int64_t d) {
  double m = 0;
  for (size_t r = 0; r * d < v.size(); ++r) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += double(v[r * d + c]) * v[r * d + c];
    m = std::max(m, std::sqrt(s));
  }
  return m;
}

// Compare out/lse with the reference under the bounds of the header comment.
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>& lse_got,
                  const std::vector<float>& lse_ref, double out_tol, double lse_tol) {
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], ref[i], out_tol) << "output element " << i;
  for (size_t i = 0; i < lse_got.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      ASSERT_EQ(lse_got[i], lse_ref[i]) << "lse " << i;  // a query with no valid entry
    } else {
      ASSERT_NEAR(lse_got[i], lse_ref[i], lse_tol) << "lse " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GQA

struct GqaCase {
  int64_t n_q, q_pos0, heads, kv_heads, dim, k;
};

// Up to `valid_max` distinct causal positions per row, in random order, the rest -1.
std::vector<int32_t> random_topk(Rng& rng, const GqaCase& c, int64_t valid_max) {
  std::vector<int32_t> topk(c.n_q * c.k, -1);
  for (int64_t t = 0; t < c.n_q; ++t) {
    std::vector<int32_t> pos(c.q_pos0 + t + 1);
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), rng.gen);
    const int64_t m = std::min<int64_t>({valid_max, c.k, static_cast<int64_t>(pos.size())});
    std::copy(pos.begin(), pos.begin() + m, topk.begin() + t * c.k);
    std::shuffle(topk.begin() + t * c.k, topk.begin() + (t + 1) * c.k, rng.gen);
  }
  return topk;
}

struct GqaResult {
  std::vector<float> out, lse;
};

// The GPU op (f32 or bf16 cache), twice, checked bitwise against itself.
GqaResult run_gqa_gpu(const GqaCase& c, int64_t cap, const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, const std::vector<int32_t>& topk, float scale, bool bf16) {
  const Tensor gq = to_gpu(q, {c.n_q, c.heads, c.dim}, DType::F32);
  const Tensor gt = to_gpu(topk, {c.n_q, c.k}, DType::I32);
  const Shape kv_shape{c.kv_heads, cap, c.dim};
  Tensor gk, gv;
  std::vector<uint16_t> kb, vb;
  if (bf16) {
    kb = to_bf16(k), vb = to_bf16(v);
    gk = to_gpu(kb, kv_shape, DType::BF16), gv = to_gpu(vb, kv_shape, DType::BF16);
  } else {
    gk = to_gpu(k, kv_shape, DType::F32), gv = to_gpu(v, kv_shape, DType::F32);
  }
  GqaResult r[2];
  for (auto& x : r) {
    Tensor out = nan_gpu({c.n_q, c.heads, c.dim}), lse = nan_gpu({c.n_q, c.heads});
    sparse_attention(gq, gk, gv, gt, c.q_pos0, scale, out, &lse);
    x.out = to_host(out), x.lse = to_host(lse);
  }
  EXPECT_EQ(r[0].out, r[1].out) << "two runs differ";
  EXPECT_EQ(r[0].lse, r[1].lse) << "two runs differ (lse)";
  return r[0];
}

void check_gqa(Rng& rng, const GqaCase& c, int64_t valid_max, bool bf16) {
  SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0 << " heads " << c.heads << "/"
                                  << c.kv_heads << " dim " << c.dim << " k " << c.k << " valid<= " << valid_max
                                  << (bf16 ? " bf16" : " f32"));
  const int64_t cap = c.q_pos0 + c.n_q + 3;
  auto q = rng.normal(c.n_q * c.heads * c.dim), k = rng.normal(c.kv_heads * cap * c.dim),
       v = rng.normal(c.kv_heads * cap * c.dim);
  if (bf16) k = widen(to_bf16(k)), v = widen(to_bf16(v));  // the reference sees what the GPU reads
  const auto topk = random_topk(rng, c, valid_max);
  const float scale = 1.0f / std::sqrt(float(c.dim));
  std::vector<float> ref(q.size(), kNaN), lse_ref(c.n_q * c.heads, kNaN);
  cpu::sparse_attention_reference(
      {q.data(), k.data(), v.data(), topk.data(), ref.data(), lse_ref.data(), c.n_q, c.heads, c.kv_heads, c.dim,
       cap, c.q_pos0, c.k, scale});
  const auto got = run_gqa_gpu(c, cap, q, k, v, topk, scale, bf16);
  const double e = gamma(c.dim) * scale * max_row_norm(q, c.dim) * max_row_norm(k, c.dim);
  const int64_t n = std::min(valid_max, c.k);
  expect_close(got.out, ref, got.lse, lse_ref, max_abs(v) * (2 * e + (n + 32) * kU), e + (n + 32) * kU);
}

TEST(SparseAttentionCuda, MatchesReferenceAcrossShapes) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (bool bf16 : {false, true}) {
    check_gqa(rng, {1, 0, 9, 3, 64, 1}, 1, bf16);          // first token: a one-entry row
    check_gqa(rng, {37, 20, 9, 3, 64, 100}, 75, bf16);     // prefill, k not a multiple of 32/64, -1s
    check_gqa(rng, {1, 3000, 9, 3, 64, 2048}, 2048, bf16); // decode, the list split over blocks
    check_gqa(rng, {1, 3000, 9, 3, 64, 2048}, 1500, bf16); // decode, rows shorter than k
    check_gqa(rng, {50, 100, 9, 3, 64, 300}, 300, bf16);   // k > context for the early queries
    check_gqa(rng, {20, 17, 4, 1, 32, 33}, 20, bf16);      // MQA group of 4, head dim 32
    check_gqa(rng, {19, 300, 8, 8, 128, 256}, 200, bf16);  // MHA, head dim 128
    check_gqa(rng, {5, 600, 12, 2, 64, 513}, 513, bf16);   // group of 6: two row chunks per KV head
  }
}

// Every causal position selected (k past the context, -1 padded) is dense causal attention.
TEST(SparseAttentionCuda, SelectingEveryPositionEqualsDenseAttention) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const GqaCase c{40, 60, 9, 3, 64, 128};
  const int64_t cap = c.q_pos0 + c.n_q;
  const auto q = rng.normal(c.n_q * c.heads * c.dim), k = rng.normal(c.kv_heads * cap * c.dim),
             v = rng.normal(c.kv_heads * cap * c.dim);
  std::vector<int32_t> topk(c.n_q * c.k, -1);
  for (int64_t t = 0; t < c.n_q; ++t)
    for (int64_t s = 0; s <= c.q_pos0 + t; ++s) topk[t * c.k + s] = static_cast<int32_t>(s);
  const float scale = 0.125f;
  std::vector<float> dense(q.size(), kNaN), lse_dense(c.n_q * c.heads, kNaN);
  cpu::attention_reference({q.data(), k.data(), v.data(), dense.data(), lse_dense.data(), c.n_q, c.heads,
                            c.kv_heads, c.dim, cap, c.q_pos0, scale});
  const auto got = run_gqa_gpu(c, cap, q, k, v, topk, scale, false);
  const double e = gamma(c.dim) * scale * max_row_norm(q, c.dim) * max_row_norm(k, c.dim);
  expect_close(got.out, dense, got.lse, lse_dense, max_abs(v) * (2 * e + (cap + 32) * kU), e + (cap + 32) * kU);
}

TEST(SparseAttentionCuda, NoValidIndexGivesZerosAndMinusInfLse) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{70}, int64_t{2048}}) {
    const GqaCase c{3, 10, 9, 3, 64, k};
    const int64_t cap = c.q_pos0 + c.n_q;
    const auto q = rng.normal(c.n_q * c.heads * c.dim), kk = rng.normal(c.kv_heads * cap * c.dim),
               v = rng.normal(c.kv_heads * cap * c.dim);
    std::vector<int32_t> topk(c.n_q * k, -1);
    if (k > 0) topk[1 * k] = 4;  // query 1 has one valid entry; 0 and 2 none
    const auto got = run_gqa_gpu(c, cap, q, kk, v, topk, 0.125f, false);
    for (int64_t t : {0, 2})
      for (int64_t h = 0; h < c.heads; ++h) {
        ASSERT_EQ(got.lse[t * c.heads + h], -kInf) << "k " << k;
        for (int64_t d = 0; d < c.dim; ++d) ASSERT_EQ(got.out[(t * c.heads + h) * c.dim + d], 0.0f) << "k " << k;
      }
    if (k == 0) continue;
    for (int64_t h = 0; h < c.heads; ++h)  // one entry: its value row exactly (weight 1)
      for (int64_t d = 0; d < c.dim; ++d)
        ASSERT_EQ(got.out[(c.heads + h) * c.dim + d], v[((h / 3) * cap + 4) * c.dim + d]) << "k " << k;
  }
}

// The documented GPU behaviour: an index outside [0, capacity) is skipped like -1 (the CPU throws).
TEST(SparseAttentionCuda, IndexOutsideTheCacheIsSkippedLikeMinusOne) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const GqaCase c{4, 50, 9, 3, 64, 96};
  const int64_t cap = c.q_pos0 + c.n_q;
  const auto q = rng.normal(c.n_q * c.heads * c.dim), k = rng.normal(c.kv_heads * cap * c.dim),
             v = rng.normal(c.kv_heads * cap * c.dim);
  auto topk = random_topk(rng, c, 60);
  const auto clean = run_gqa_gpu(c, cap, q, k, v, topk, 0.125f, false);
  int flip = 0;
  for (auto& s : topk)
    if (s == -1) s = ++flip % 2 ? static_cast<int32_t>(cap + 1000) : -7;
  const auto bad = run_gqa_gpu(c, cap, q, k, v, topk, 0.125f, false);
  EXPECT_EQ(bad.out, clean.out);
  EXPECT_EQ(bad.lse, clean.lse);
}

// The bf16 cache came with the CUDA kernel; on the CPU the front widens it to f32 (exactly), so
// its result is the f32 path's on the widened cache, bit for bit. Runs without a GPU.
TEST(SparseAttentionCpu, Bf16CacheThroughTheFrontIsTheWidenedF32Cache) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const GqaCase c{6, 30, 9, 3, 64, 40};
  const int64_t cap = c.q_pos0 + c.n_q;
  auto q = rng.normal(c.n_q * c.heads * c.dim);
  const auto kb = to_bf16(rng.normal(c.kv_heads * cap * c.dim)), vb = to_bf16(rng.normal(c.kv_heads * cap * c.dim));
  auto kf = widen(kb), vf = widen(vb);
  auto topk = random_topk(rng, c, 30);
  const Shape kv_shape{c.kv_heads, cap, c.dim};
  const Tensor tq = Tensor::borrow(q.data(), {c.n_q, c.heads, c.dim}, DType::F32);
  const Tensor tt = Tensor::borrow(topk.data(), {c.n_q, c.k}, DType::I32);
  Tensor o1 = Tensor::empty({c.n_q, c.heads, c.dim}, DType::F32), o2 = o1.to(Device::CPU);
  Tensor l1 = Tensor::empty({c.n_q, c.heads}, DType::F32), l2 = l1.to(Device::CPU);
  sparse_attention(tq, Tensor::borrow(const_cast<uint16_t*>(kb.data()), kv_shape, DType::BF16),
                   Tensor::borrow(const_cast<uint16_t*>(vb.data()), kv_shape, DType::BF16), tt, c.q_pos0, 0.125f, o1,
                   &l1);
  sparse_attention(tq, Tensor::borrow(kf.data(), kv_shape, DType::F32), Tensor::borrow(vf.data(), kv_shape, DType::F32),
                   tt, c.q_pos0, 0.125f, o2, &l2);
  EXPECT_TRUE(std::equal(o1.data<float>(), o1.data<float>() + o1.numel(), o2.data<float>()));
  EXPECT_TRUE(std::equal(l1.data<float>(), l1.data<float>() + l1.numel(), l2.data<float>()));
  // Mixed cache types are refused.
  EXPECT_THROW(sparse_attention(tq, Tensor::borrow(const_cast<uint16_t*>(kb.data()), kv_shape, DType::BF16),
                                Tensor::borrow(vf.data(), kv_shape, DType::F32), tt, c.q_pos0, 0.125f, o1, &l1),
               Error);
}

// ---------------------------------------------------------------------------------------------
// MLA

struct MlaCase {
  int64_t n_q, heads, n_kv, k;
};

struct MlaInputs {
  std::vector<uint16_t> q, kv;  // kv: the bf16 cache, or the dequantised copy of kv8
  std::vector<int32_t> idx;
  std::vector<uint8_t> kv8;     // the fp8 cache (656-byte rows), when testing it
};

// Distinct rows per token (at most valid_max of them), random order, -1 elsewhere. fp8: the
// cache is quantised (quantize_mla_fp8) and kv becomes its dequantised copy, the reference's input.
MlaInputs make_mla(Rng& rng, const MlaCase& c, int64_t valid_max, bool fp8 = false) {
  MlaInputs in;
  in.q = to_bf16(rng.normal(c.n_q * c.heads * kMlaDimQK));
  in.kv = to_bf16(rng.normal(c.n_kv * kMlaDimQK));
  if (fp8) {
    in.kv8.resize(c.n_kv * kMlaFp8RowBytes);
    for (int64_t r = 0; r < c.n_kv; ++r) {
      quantize_mla_fp8(in.kv.data() + r * kMlaDimQK, in.kv8.data() + r * kMlaFp8RowBytes);
      dequantize_mla_fp8(in.kv8.data() + r * kMlaFp8RowBytes, in.kv.data() + r * kMlaDimQK);
    }
  }
  in.idx.assign(c.n_q * c.k, -1);
  std::vector<int32_t> rows(c.n_kv);
  std::iota(rows.begin(), rows.end(), 0);
  for (int64_t t = 0; t < c.n_q; ++t) {
    std::shuffle(rows.begin(), rows.end(), rng.gen);
    const int64_t m = std::min<int64_t>({valid_max, c.k, c.n_kv});
    std::copy(rows.begin(), rows.begin() + m, in.idx.begin() + t * c.k);
    std::shuffle(in.idx.begin() + t * c.k, in.idx.begin() + (t + 1) * c.k, rng.gen);
  }
  return in;
}

const char* kernel_name(MlaKernel k) {
  return k == MlaKernel::Wgmma ? "wgmma" : k == MlaKernel::MmaSync ? "mma.sync" : "auto";
}

GqaResult run_mla_gpu(const MlaCase& c, const MlaInputs& in, float scale, MlaKernel kernel = MlaKernel::Auto) {
  const Tensor gq = to_gpu(in.q, {c.n_q, c.heads, kMlaDimQK}, DType::BF16);
  const Tensor gkv = in.kv8.empty() ? to_gpu(in.kv, {c.n_kv, kMlaDimQK}, DType::BF16)
                                    : to_gpu(in.kv8, {c.n_kv, kMlaFp8RowBytes}, DType::F8_E4M3);
  const Tensor gi = to_gpu(in.idx, {c.n_q, c.k}, DType::I32);
  GqaResult r[2];
  for (auto& x : r) {
    Tensor out = nan_gpu({c.n_q, c.heads, kMlaDimV}), lse = nan_gpu({c.n_q, c.heads});
    sparse_mla(gq, gkv, gi, scale, out, &lse, kernel);
    x.out = to_host(out), x.lse = to_host(lse);
  }
  EXPECT_EQ(r[0].out, r[1].out) << "two runs differ";
  EXPECT_EQ(r[0].lse, r[1].lse) << "two runs differ (lse)";
  return r[0];
}

// The kernels this GPU runs: mma.sync always, wgmma on Hopper (it refuses other GPUs).
const std::vector<MlaKernel>& mla_kernels() {
  static const std::vector<MlaKernel> kernels = [] {
    std::vector<MlaKernel> k{MlaKernel::MmaSync};
    Rng rng;
    const MlaCase c{1, 64, 64, 64};
    try {
      run_mla_gpu(c, make_mla(rng, c, 64), 0.1f, MlaKernel::Wgmma);
      k.push_back(MlaKernel::Wgmma);
    } catch (const Error& e) {
      std::printf("sparse_mla: no wgmma kernel on this GPU (%s)\n", e.what());
    }
    return k;
  }();
  return kernels;
}

void check_mla(Rng& rng, const MlaCase& c, int64_t valid_max, bool fp8 = false) {
  SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " heads " << c.heads << " n_kv " << c.n_kv << " k " << c.k
                                  << " valid<= " << valid_max << (fp8 ? " fp8" : " bf16"));
  const auto in = make_mla(rng, c, valid_max, fp8);
  const float scale = 1.0f / std::sqrt(float(kMlaDimQK));
  std::vector<float> ref(c.n_q * c.heads * kMlaDimV, kNaN), lse_ref(c.n_q * c.heads, kNaN);
  // cpu::sparse_mla is the reference run in parallel (bitwise equal: test_sparse_mla.cpp); an fp8
  // cache means its dequantised copy (also test_sparse_mla.cpp).
  cpu::sparse_mla(
      {in.q.data(), in.kv.data(), in.idx.data(), ref.data(), lse_ref.data(), c.n_q, c.heads, c.n_kv, c.k, scale});
  const auto qf = widen(in.q), kvf = widen(in.kv);
  const double e = gamma(kMlaDimQK) * scale * max_row_norm(qf, kMlaDimQK) * max_row_norm(kvf, kMlaDimQK);
  const int64_t n = std::min({valid_max, c.k, c.n_kv});
  for (MlaKernel kernel : mla_kernels()) {
    SCOPED_TRACE(kernel_name(kernel));
    const auto got = run_mla_gpu(c, in, scale, kernel);
    expect_close(got.out, ref, got.lse, lse_ref, max_abs(kvf) * (2 * e + 2 * kBf16U + (n + 32) * kU),
                 e + (n + 32) * kU);
  }
}

TEST(SparseMlaCuda, MatchesReferenceAcrossShapes) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  check_mla(rng, {3, 64, 500, 64}, 64);       // prefill-like, one full tile
  check_mla(rng, {5, 128, 3000, 300}, 250);   // two head blocks, k not a multiple of 64, -1s
  check_mla(rng, {4, 16, 700, 130}, 130);     // 16 heads (padded to 64), tail tile of 2 keys
  check_mla(rng, {2, 40, 100, 256}, 256);     // k > the cache: rows shorter than k
  check_mla(rng, {1, 128, 5000, 2048}, 2048); // decode, batch 1: split over blocks
  check_mla(rng, {64, 64, 5000, 512}, 400);   // decode, batch 64
  check_mla(rng, {3, 64, 200, 1}, 1);         // one-entry rows
  check_mla(rng, {300, 64, 4000, 256}, 256);  // more blocks than multiprocessors, several tiles each
}

TEST(SparseMlaCuda, Fp8CacheMatchesReference) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  check_mla(rng, {3, 64, 500, 64}, 64, true);
  check_mla(rng, {5, 128, 3000, 300}, 250, true);
  check_mla(rng, {4, 16, 700, 130}, 130, true);
  check_mla(rng, {1, 64, 5000, 2048}, 2048, true);  // decode, split
  check_mla(rng, {64, 128, 5000, 512}, 400, true);  // decode, batch 64
  check_mla(rng, {300, 64, 4000, 256}, 256, true);
}

TEST(SparseMlaCuda, NoValidIndexAndOutsideTheCache) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (bool fp8 : {false, true})
    for (MlaKernel kernel : mla_kernels())
      for (int64_t k : {int64_t{0}, int64_t{64}, int64_t{2048}}) {
        SCOPED_TRACE(testing::Message() << kernel_name(kernel) << (fp8 ? " fp8" : " bf16") << " k " << k);
        const MlaCase c{3, 64, 300, k};
        auto in = make_mla(rng, c, 0, fp8);  // all -1
        if (k > 0) in.idx[1 * k + k / 2] = 7;
        const auto got = run_mla_gpu(c, in, 0.05f, kernel);
        for (int64_t t : {0, 2})
          for (int64_t h = 0; h < c.heads; ++h) {
            ASSERT_EQ(got.lse[t * c.heads + h], -kInf) << "k " << k;
            for (int64_t d = 0; d < kMlaDimV; ++d) ASSERT_EQ(got.out[(t * c.heads + h) * kMlaDimV + d], 0.0f);
          }
        if (k == 0) continue;
        // A single key: weight exactly 1, its (dequantised) latent row exactly.
        for (int64_t h = 0; h < c.heads; ++h)
          for (int64_t d = 0; d < kMlaDimV; ++d)
            ASSERT_EQ(got.out[(c.heads + h) * kMlaDimV + d], bf16_to_f32(in.kv[7 * kMlaDimQK + d]));
        // Rows past the cache and below -1 are skipped like -1 on the GPU (the CPU throws).
        auto bad = in;
        for (int64_t i = 0; i < k; ++i) bad.idx[2 * k + i] = i % 2 ? static_cast<int32_t>(c.n_kv + i) : -3;
        const auto got_bad = run_mla_gpu(c, bad, 0.05f, kernel);
        EXPECT_EQ(got_bad.out, got.out);
        EXPECT_EQ(got_bad.lse, got.lse);
      }
}

}  // namespace
}  // namespace ic::ops
