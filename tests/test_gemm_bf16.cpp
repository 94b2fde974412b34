// ops::gemm_bf16: the CPU reference on hand-worked cases and bad input, the cuBLASLt path against
// it on fresh random inputs (skipped without a GPU).
//
// Tolerances: bf16 products are exact in f32, so the GPU's f32 sum of `in` products errs by at
// most gamma_in * sum |x_k w_k| (Higham eq. 3.5, any order, FMA or not; u = 2^-24), and the
// reference (double, then f32) by u |y|. A bf16 y is rounded once on each side (each within
// u_bf16 = 2^-8 relative), so the two may differ by 2 u_bf16 |y| on top; accumulating into a bf16
// y, cuBLASLt may also round x W^T to bf16 before adding the old y (ops/gemm_bf16.h): u_bf16 |x W^T|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "op_test_util.h"
#include "ops/gemm_bf16.h"
#include "test_util.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;
constexpr double kBf16U = 1.0 / 256;  // unit roundoff of bf16 (8 significant bits): 2^-8

using test::expect_error;

std::vector<uint16_t> bf16_of(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_bf16(v[i]);
  return r;
}

template <typename T>
Tensor host_tensor(std::vector<T>& v, const Shape& s, DType t) {
  return Tensor::borrow(v.data(), s, t);
}

TEST(GemmBf16Cpu, HandWorked) {
  // x = [[1, 2], [3, -4]], W = [[1, 0], [1, 1], [0.5, -1]]: y = [[1, 3, -1.5], [3, -1, 5.5]].
  std::vector<uint16_t> x = bf16_of({1, 2, 3, -4}), w = bf16_of({1, 0, 1, 1, 0.5f, -1});
  std::vector<float> y(6, -7.0f);
  Tensor tx = host_tensor(x, {2, 2}, DType::BF16), tw = host_tensor(w, {3, 2}, DType::BF16);
  Tensor ty = host_tensor(y, {2, 3}, DType::F32);
  gemm_bf16(tx, tw, ty);
  EXPECT_EQ(y, (std::vector<float>{1, 3, -1.5f, 3, -1, 5.5f}));
  gemm_bf16(tx, tw, ty, /*accumulate=*/true);
  EXPECT_EQ(y, (std::vector<float>{2, 6, -3, 6, -2, 11}));
  // bf16 y: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and rounds to even (1).
  std::vector<uint16_t> x2 = bf16_of({1, 1.0f / 256}), w2 = bf16_of({1, 1}), y2(1);
  Tensor ty2 = host_tensor(y2, {1, 1}, DType::BF16);
  gemm_bf16(host_tensor(x2, {1, 2}, DType::BF16), host_tensor(w2, {1, 2}, DType::BF16), ty2);
  EXPECT_EQ(bf16_to_f32(y2[0]), 1.0f);
}

TEST(GemmBf16Cpu, BadInputIsAClearError) {
  std::vector<uint16_t> x(6), w(6), yb(4);
  std::vector<float> xf(6), y(4);
  Tensor tx = host_tensor(x, {2, 3}, DType::BF16), tw = host_tensor(w, {2, 3}, DType::BF16);
  Tensor ty = host_tensor(y, {2, 2}, DType::F32);
  expect_error([&] { gemm_bf16(host_tensor(xf, {2, 3}, DType::F32), tw, ty); }, "gemm_bf16 x");
  Tensor tw_bad = host_tensor(w, {3, 2}, DType::BF16);
  expect_error([&] { gemm_bf16(tx, tw_bad, ty); }, "inner size");
  Tensor ty_bad = host_tensor(y, {1, 4}, DType::F32);
  expect_error([&] { gemm_bf16(tx, tw, ty_bad); }, "must be [2, 2]");
  Tensor ty_i32 = host_tensor(y, {2, 2}, DType::I32);
  expect_error([&] { gemm_bf16(tx, tw, ty_i32); }, "F32 or BF16");
}

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

struct Case {
  int64_t n, out, in;
};

// Runs the GPU GEMM twice on x [n, in] (rows from `row0` of a larger buffer, so the pointer may be
// misaligned) and returns y's bits as floats; checks the two runs agree bitwise.
std::vector<float> run_gpu(const std::vector<uint16_t>& x_all, int64_t row0, const Case& c,
                           const std::vector<uint16_t>& w, DType y_type, const std::vector<float>& y0, bool acc) {
  const int64_t rows_all = static_cast<int64_t>(x_all.size()) / c.in;
  Tensor gx_all = Tensor::borrow(const_cast<uint16_t*>(x_all.data()), {rows_all, c.in}, DType::BF16).to(Device::CUDA);
  Tensor gx = gx_all.slice_rows(row0, row0 + c.n);
  Tensor gw = Tensor::borrow(const_cast<uint16_t*>(w.data()), {c.out, c.in}, DType::BF16).to(Device::CUDA);
  std::vector<float> result[2];
  for (auto& r : result) {
    Tensor hy;
    if (y_type == DType::F32) {
      hy = Tensor::borrow(const_cast<float*>(y0.data()), {c.n, c.out}, DType::F32).to(Device::CPU);
    } else {
      hy = Tensor::empty({c.n, c.out}, DType::BF16);
      for (int64_t i = 0; i < c.n * c.out; ++i) hy.data<uint16_t>()[i] = f32_to_bf16(y0[i]);
    }
    Tensor gy = hy.to(Device::CUDA);
    gemm_bf16(gx, gw, gy, acc);
    const Tensor back = gy.to(Device::CPU);
    r.resize(c.n * c.out);
    for (int64_t i = 0; i < c.n * c.out; ++i)
      r[i] = y_type == DType::F32 ? back.data<float>()[i] : bf16_to_f32(back.data<uint16_t>()[i]);
  }
  EXPECT_EQ(0, std::memcmp(result[0].data(), result[1].data(), result[0].size() * 4)) << "two runs differ";
  return result[0];
}

TEST(GemmBf16Cuda, MatchesReferenceAndRepeatsBitwise) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  // Decode (n 1), odd sizes (misaligned rows when `in` is odd), a prefill-like block, and the
  // router's logits shape (64 experts of 2048).
  for (const Case c : {Case{1, 7, 5}, Case{1, 2048, 2048}, Case{13, 64, 2048}, Case{37, 129, 77},
                       Case{256, 576, 512}}) {
    for (DType y_type : {DType::F32, DType::BF16})
      for (bool acc : {false, true})
        for (int64_t row0 : {0, 1}) {
          SCOPED_TRACE(testing::Message() << "n " << c.n << " out " << c.out << " in " << c.in << " y "
                                          << dtype_name(y_type) << " acc " << acc << " row0 " << row0);
          const auto x_all = bf16_of(rng.normal((c.n + row0) * c.in));
          const auto w = bf16_of(rng.normal(c.out * c.in, 1.0f / std::sqrt(static_cast<float>(c.in))));
          std::vector<float> y0 = rng.normal(c.n * c.out);
          if (y_type == DType::BF16)
            for (auto& v : y0) v = bf16_to_f32(f32_to_bf16(v));
          const auto got = run_gpu(x_all, row0, c, w, y_type, y0, acc);
          // The reference on the same inputs; and sum |x w| per output for the bound.
          std::vector<uint16_t> x(x_all.begin() + row0 * c.in, x_all.end());
          std::vector<float> ref(y0);
          std::vector<uint16_t> ref_b = bf16_of(y0);
          GemmBf16Params p{x.data(), w.data(), y_type == DType::F32 ? static_cast<void*>(ref.data()) : ref_b.data(),
                           c.n, c.out, c.in, y_type};
          p.accumulate = acc;
          cpu::gemm_bf16_reference(p);
          for (int64_t r = 0; r < c.n; ++r)
            for (int64_t o = 0; o < c.out; ++o) {
              double mag = acc ? std::fabs(y0[r * c.out + o]) : 0.0;
              for (int64_t k = 0; k < c.in; ++k)
                mag += std::fabs(bf16_to_f32(x[r * c.in + k]) * bf16_to_f32(w[o * c.in + k]));
              const int64_t i = r * c.out + o;
              const double want = y_type == DType::F32 ? ref[i] : bf16_to_f32(ref_b[i]);
              const double product = std::fabs(want - (acc ? y0[r * c.out + o] : 0.0));  // |x W^T|, nearly
              const double early = acc && y_type == DType::BF16 ? kBf16U * (product + gamma(c.in) * mag) : 0.0;
              const double tol = gamma(c.in + 1) * mag + (y_type == DType::F32 ? kU : 2 * kBf16U) * std::fabs(want) +
                                 early + 1e-30;
              ASSERT_NEAR(got[i], want, tol) << "row " << r << " col " << o;
            }
        }
  }
}

TEST(GemmBf16Cuda, EmptyBatchIsANoOp) {
  IC_CUDA_OR_SKIP();
  Tensor x = Tensor::zeros({0, 16}, DType::BF16, Device::CUDA), w = Tensor::zeros({8, 16}, DType::BF16, Device::CUDA);
  Tensor y = Tensor::zeros({0, 8}, DType::F32, Device::CUDA);
  gemm_bf16(x, w, y);
  SUCCEED();
}


// A strided batch is its products one by one: the reference by construction, checked here on a
// per-head layout like the absorbed MLA's (w read from inside a larger matrix).
TEST(GemmBf16Cpu, StridedBatchIsEachProduct) {
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t B = 3, n = 4, out = 5, in = 6, w_stride = 11 * in;  // w rows of each batch inside 11
  const auto x = bf16_of(rng.normal(B * n * in));
  const auto w = bf16_of(rng.normal(B * w_stride));
  std::vector<float> y(B * n * out);
  GemmBf16Params p{x.data(), w.data() + 2 * in, y.data(), n, out, in, DType::F32};
  p.batch = B;
  p.stride_x = n * in;
  p.stride_w = w_stride;
  p.stride_y = n * out;
  gemm_bf16(p, Device::CPU);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> one(n * out);
    GemmBf16Params q{x.data() + b * n * in, w.data() + 2 * in + b * w_stride, one.data(), n, out, in, DType::F32};
    cpu::gemm_bf16_reference(q);
    for (int64_t i = 0; i < n * out; ++i) EXPECT_EQ(y[b * n * out + i], one[i]) << "batch " << b;
  }
  GemmBf16Params bad = p;
  bad.stride_y = n * out - 1;  // overlapping outputs
  expect_error([&] { gemm_bf16(bad, Device::CPU); }, "batch strides");
}

// The GPU's strided batch against the reference, with the single GEMM's bound per output, at the
// absorbed MLA's shapes (decode n 1 and a prefill block; 20 heads of nope 192 -> 512 and 512 -> 256).
TEST(GemmBf16Cuda, StridedBatchMatchesReference) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  struct BCase {
    int64_t batch, n, out, in, w_stride;
  };
  for (const BCase c : {BCase{20, 1, 512, 192, 512 * 192}, BCase{20, 37, 512, 192, 512 * 192},
                        BCase{20, 1, 256, 512, 448 * 512}, BCase{3, 64, 256, 512, 448 * 512}}) {
    SCOPED_TRACE(testing::Message() << "batch " << c.batch << " n " << c.n << " out " << c.out << " in " << c.in);
    const auto x = bf16_of(rng.normal(c.batch * c.n * c.in));
    const auto w = bf16_of(rng.normal(c.batch * c.w_stride, 1.0f / std::sqrt(static_cast<float>(c.in))));
    std::vector<float> ref(c.batch * c.n * c.out);
    GemmBf16Params p{x.data(), w.data(), ref.data(), c.n, c.out, c.in, DType::F32};
    p.batch = c.batch;
    p.stride_x = c.n * c.in;
    p.stride_w = c.w_stride;
    p.stride_y = c.n * c.out;
    cpu::gemm_bf16_reference(p);
    const Tensor gx = Tensor::borrow(const_cast<uint16_t*>(x.data()), {static_cast<int64_t>(x.size())}, DType::BF16)
                          .to(Device::CUDA);
    const Tensor gw = Tensor::borrow(const_cast<uint16_t*>(w.data()), {static_cast<int64_t>(w.size())}, DType::BF16)
                          .to(Device::CUDA);
    Tensor gy = Tensor::empty({static_cast<int64_t>(ref.size())}, DType::F32, Device::CUDA);
    GemmBf16Params g = p;
    g.x = gx.data<uint16_t>();
    g.w = gw.data<uint16_t>();
    g.y = gy.raw();
    gemm_bf16(g, Device::CUDA);
    const Tensor got = gy.to(Device::CPU);
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t r = 0; r < c.n; ++r)
        for (int64_t o = 0; o < c.out; ++o) {
          double mag = 0.0;
          for (int64_t k = 0; k < c.in; ++k)
            mag += std::fabs(bf16_to_f32(x[(b * c.n + r) * c.in + k]) * bf16_to_f32(w[b * c.w_stride + o * c.in + k]));
          const int64_t i = (b * c.n + r) * c.out + o;
          ASSERT_NEAR(got.data<float>()[i], ref[i], gamma(c.in + 1) * mag + kU * std::fabs(ref[i]) + 1e-30)
              << "batch " << b << " row " << r << " col " << o;
        }
  }
}

}  // namespace
}  // namespace ic::ops
