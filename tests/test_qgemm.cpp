// Quantised GEMM: packing round trips, the activation quantiser, and every available ISA
// against (a) an exact reference on the same quantised activations and (b) the f32 reference,
// plus bitwise determinism (twice, across thread counts, across ISAs).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/qgemm.h"

namespace ic::ops {
namespace {

constexpr double kEps = 0x1p-24;  // f32 unit roundoff

std::vector<CpuIsa> available_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (cpu_supports(isa)) out.push_back(isa);
  return out;
}

void put_f16(std::vector<uint8_t>& dst, float v) {
  const uint16_t h = f32_to_f16(v);
  dst.push_back(static_cast<uint8_t>(h & 0xff));
  dst.push_back(static_cast<uint8_t>(h >> 8));
}

// n_out GGUF rows of n_in random weights of `type`, scaled like a real layer (|w| ~ 0.05).
std::vector<uint8_t> random_weights(DType type, int64_t n_out, int64_t n_in, std::mt19937& rng) {
  std::uniform_real_distribution<float> scale(0.002f, 0.01f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<uint8_t> out;
  const int64_t nb = n_in / 32;
  for (int64_t o = 0; o < n_out; ++o) {
    for (int64_t b = 0; b < nb; ++b) {
      switch (type) {
        case DType::Q4_1: {
          const float d = scale(rng);
          put_f16(out, d);
          put_f16(out, -d * std::uniform_real_distribution<float>(4.0f, 12.0f)(rng));
          for (int k = 0; k < 16; ++k) out.push_back(static_cast<uint8_t>(byte(rng)));
          break;
        }
        case DType::Q4_0:
          put_f16(out, byte(rng) & 1 ? scale(rng) : -scale(rng));
          for (int k = 0; k < 16; ++k) out.push_back(static_cast<uint8_t>(byte(rng)));
          break;
        case DType::Q8_0:
          put_f16(out, scale(rng) / 16);
          for (int k = 0; k < 32; ++k) out.push_back(static_cast<uint8_t>(byte(rng)));
          break;
        case DType::F32:
        case DType::F16:
        case DType::BF16:
          for (int k = 0; k < 32; ++k) {
            const float v = normal(rng);
            if (type == DType::F32) {
              const auto* p = reinterpret_cast<const uint8_t*>(&v);
              out.insert(out.end(), p, p + 4);
            } else if (type == DType::F16) {
              put_f16(out, v);
            } else {
              const uint16_t h = f32_to_bf16(v);
              out.push_back(static_cast<uint8_t>(h & 0xff));
              out.push_back(static_cast<uint8_t>(h >> 8));
            }
          }
          break;
        default: ADD_FAILURE() << "no generator for " << dtype_name(type);
      }
    }
  }
  EXPECT_EQ(static_cast<int64_t>(out.size()), n_out * dtype_row_bytes(type, n_in));
  return out;
}

// Activations like a transformer's: mostly N(0, 1) with a per-block scale spread over three
// decades and an occasional outlier, never all zero.
std::vector<float> random_acts(int64_t n_tok, int64_t n_in, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> logscale(-2.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(n_tok * n_in);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t b = 0; b < n_in / 32; ++b) {
      const float s = std::pow(10.0f, logscale(rng));
      for (int k = 0; k < 32; ++k) {
        float v = normal(rng) * s;
        if (pick(rng) == 0) v *= 20.0f;
        x[t * n_in + b * 32 + k] = v;
      }
    }
  return x;
}

// The value GGUF defines for element i of a row, in double.
double gguf_value(DType type, const uint8_t* row, int64_t i) {
  auto f16 = [](const uint8_t* p) { return static_cast<double>(f16_to_f32(p[0] | p[1] << 8)); };
  const uint8_t* blk = row + (i / 32) * dtype_block_bytes(type);
  const int j = static_cast<int>(i % 32);
  switch (type) {
    case DType::Q4_1: {
      const int nib = j < 16 ? blk[4 + j] & 15 : blk[4 + j - 16] >> 4;
      return f16(blk) * nib + f16(blk + 2);
    }
    case DType::Q4_0: {
      const int nib = j < 16 ? blk[2 + j] & 15 : blk[2 + j - 16] >> 4;
      return f16(blk) * (nib - 8);
    }
    case DType::Q8_0: return f16(blk) * static_cast<int8_t>(blk[2 + j]);
    default: ADD_FAILURE(); return 0.0;
  }
}

double float_source(DType type, const uint8_t* rows, int64_t idx) {
  if (type == DType::F32) {
    float v;
    std::memcpy(&v, rows + 4 * idx, 4);
    return v;
  }
  const uint16_t h = rows[2 * idx] | rows[2 * idx + 1] << 8;
  return type == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

const DType kTypes[] = {DType::Q4_1, DType::Q4_0, DType::Q8_0,
                        DType::F32,  DType::F16,  DType::BF16};

TEST(QgemmPack, DequantizeRowMatchesGgufFormula) {
  std::mt19937 rng(11);
  for (DType type : kTypes) {
    SCOPED_TRACE(std::string(dtype_name(type)));
    const int64_t n_out = 37, n_in = 96;  // a partial row group
    const auto raw = random_weights(type, n_out, n_in, rng);
    const PackedWeight w = PackedWeight::pack(type, raw.data(), n_out, n_in);
    EXPECT_EQ(w.n_out(), n_out);
    EXPECT_EQ(w.n_in(), n_in);
    EXPECT_EQ(w.code_bits(), type == DType::Q4_0 || type == DType::Q4_1 ? 4 : 8);
    EXPECT_EQ(w.bytes(), 3 * 3 * w.record_bytes());
    std::vector<float> row(n_in);
    for (int64_t o = 0; o < n_out; ++o) {
      w.dequantize_row(o, row.data());
      const uint8_t* src = raw.data() + o * dtype_row_bytes(type, n_in);
      for (int64_t i = 0; i < n_in; ++i) {
        if (dtype_is_quantized(type)) {
          // GGUF's own formula, computed exactly and rounded once: must match bit for bit.
          ASSERT_EQ(row[i], static_cast<float>(gguf_value(type, src, i))) << o << "," << i;
        } else {
          // Codes round (w - m) / d to nearest: error <= d/2, plus the f32 rounding of
          // d * q + m (half an ulp of the result).
          const double orig = float_source(type, raw.data(), o * n_in + i);
          const double d = w.block_scale(o, i / 32);
          ASSERT_LE(std::fabs(row[i] - orig), d / 2 + kEps * std::fabs(row[i])) << o << "," << i;
          ASSERT_GE(w.code(o, i), 0);
          ASSERT_LE(w.code(o, i), 255);
        }
      }
    }
  }
}

TEST(QgemmPack, FloatBlockWithOneValueIsExact) {
  std::vector<float> rows(64, 0.3f);
  const PackedWeight w = PackedWeight::pack(DType::F32, rows.data(), 2, 32);
  std::vector<float> row(32);
  w.dequantize_row(1, row.data());
  for (float v : row) EXPECT_NEAR(v, 0.3f, w.block_scale(1, 0) / 2 + 1e-7);
}

TEST(QgemmPack, RejectsBadInput) {
  std::vector<uint8_t> raw(4096, 0);
  EXPECT_THROW(PackedWeight::pack(DType::Q4_K, raw.data(), 1, 256), Error);
  EXPECT_THROW(PackedWeight::pack(DType::Q4_1, raw.data(), 1, 48), Error);
  EXPECT_THROW(PackedWeight::pack(DType::Q4_1, raw.data(), 0, 32), Error);
  std::vector<float> big(32, 1e6f);
  EXPECT_THROW(PackedWeight::pack(DType::F32, big.data(), 1, 32), Error);
  std::vector<float> nan(32, std::nanf(""));
  EXPECT_THROW(PackedWeight::pack(DType::F32, nan.data(), 1, 32), Error);
  std::vector<uint8_t> q8(34, 0);
  const uint16_t huge = f32_to_f16(1000.0f);  // -128 * d overflows f16
  std::memcpy(q8.data(), &huge, 2);
  EXPECT_THROW(PackedWeight::pack(DType::Q8_0, q8.data(), 1, 32), Error);
}

TEST(QgemmQuantize, ErrorWithinHalfStep) {
  std::mt19937 rng(5);
  const int64_t n_tok = 7, n_in = 192, nb = n_in / 32;
  const auto x = random_acts(n_tok, n_in, rng);
  QuantizedActs xq;
  quantize_activations(x.data(), n_tok, n_in, xq);
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      float amax = 0.0f;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[t * n_in + b * 32 + k]));
      const float s = xq.scale[t * nb + b];
      EXPECT_EQ(s, amax / 127.0f);
      int32_t sum = 0, qmax = 0;
      for (int k = 0; k < 32; ++k) {
        const int64_t i = t * n_in + b * 32 + k;
        const int q = xq.q[i];
        ASSERT_LE(std::abs(q), 127);
        // Derivation in qgemm.h: round(x / s) with x / s rounded once: <= s (1/2 + 128 eps).
        ASSERT_LE(std::fabs(x[i] - static_cast<double>(s) * q), s * (0.5 + 128 * kEps));
        sum += q;
        qmax = std::max(qmax, std::abs(q));
      }
      EXPECT_EQ(qmax, 127);  // the block maximum maps to the end of the range
      EXPECT_EQ(xq.sum[t * nb + b], sum);
      EXPECT_EQ(xq.ssum[t * nb + b], s * static_cast<float>(sum));
    }
  }
  std::vector<float> bad = x;
  bad[3 * n_in + 5] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(quantize_activations(bad.data(), n_tok, n_in, xq), Error);
}

// Runs every available ISA on one case and checks it against both references.
void check_case(DType type, int64_t n_out, int64_t n_in, int64_t n_tok, uint32_t seed) {
  SCOPED_TRACE(fmt::format("{} N={} K={} T={}", dtype_name(type), n_out, n_in, n_tok));
  std::mt19937 rng(seed);
  const auto raw = random_weights(type, n_out, n_in, rng);
  const auto x = random_acts(n_tok, n_in, rng);
  const PackedWeight w = PackedWeight::pack(type, raw.data(), n_out, n_in);
  QuantizedActs xq;
  quantize_activations(x.data(), n_tok, n_in, xq);
  const int64_t nb = n_in / 32;

  // (a) Exact product on the same quantised activations, in double, with the sum of the
  // magnitudes of the 2 nb terms the kernel adds. Kernel error: each term carries one
  // rounding (d * s or s * sum(xq)) and each of the 2 nb fma adds one: gamma(2 nb + 1); +1
  // for rounding this double reference's comparison.
  std::vector<double> exact(n_tok * n_out), terms(n_tok * n_out);
  {
    std::vector<int> q(n_in);
    for (int64_t o = 0; o < n_out; ++o) {
      for (int64_t i = 0; i < n_in; ++i) q[i] = w.code(o, i);
      for (int64_t t = 0; t < n_tok; ++t) {
        double e = 0.0, m = 0.0;
        for (int64_t b = 0; b < nb; ++b) {
          int64_t dot = 0;
          for (int k = 0; k < 32; ++k) dot += q[b * 32 + k] * xq.q[t * n_in + b * 32 + k];
          const double s = xq.scale[t * nb + b];
          const double t1 = w.block_scale(o, b) * s * static_cast<double>(dot);
          const double t2 = w.block_min(o, b) * s * xq.sum[t * nb + b];
          e += t1 + t2;
          m += std::fabs(t1) + std::fabs(t2);
        }
        exact[t * n_out + o] = e;
        terms[t * n_out + o] = m;
      }
    }
  }
  const double n_round = 2.0 * nb + 2.0;
  const double gamma = n_round * kEps / (1.0 - n_round * kEps);

  // (b) f32 reference and the a-priori bound of qgemm.h.
  std::vector<float> ref(n_tok * n_out), bound(n_tok * n_out);
  qgemm_reference(w, x.data(), n_tok, ref.data());
  qgemm_error_bound(w, x.data(), n_tok, bound.data());

  std::vector<float> first;
  for (CpuIsa isa : available_isas()) {
    SCOPED_TRACE(std::string(cpu_isa_name(isa)));
    std::vector<float> y(n_tok * n_out, std::nanf("")), y2(n_tok * n_out, std::nanf(""));
    qgemm(w, xq, y.data(), isa);
    int64_t bad_a = 0, bad_b = 0;
    for (int64_t i = 0; i < n_tok * n_out; ++i) {
      if (!(std::fabs(y[i] - exact[i]) <= gamma * terms[i])) {
        if (bad_a++ < 3)
          ADD_FAILURE() << "(a) output " << i << ": " << y[i] << " vs exact " << exact[i]
                        << ", bound " << gamma * terms[i];
      }
      if (!(std::fabs(y[i] - ref[i]) <= bound[i])) {
        if (bad_b++ < 3)
          ADD_FAILURE() << "(b) output " << i << ": " << y[i] << " vs reference " << ref[i]
                        << ", bound " << bound[i];
      }
    }
    EXPECT_EQ(bad_a, 0);
    EXPECT_EQ(bad_b, 0);
    qgemm(w, xq, y2.data(), isa);
    EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * sizeof(float))) << "run twice";
    // Every ISA does the same f32 operations in the same order (qgemm.h): bitwise equal.
    if (first.empty())
      first = y;
    else
      EXPECT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * sizeof(float)))
          << "differs from " << cpu_isa_name(available_isas()[0]);
  }
  // The float entry point is quantise + qgemm with the active ISA.
  std::vector<float> y(n_tok * n_out);
  qgemm(w, x.data(), n_tok, y.data());
  EXPECT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * sizeof(float)));
}

TEST(Qgemm, ModelShapesQ4_1) {
  const int64_t shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}};
  uint32_t seed = 100;
  for (auto [n, k] : shapes)
    for (int64_t t : {1, 2, 3, 17, 128, 513}) check_case(DType::Q4_1, n, k, t, seed++);
}

TEST(Qgemm, ModelShapesOtherTypes) {
  const int64_t shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}};
  uint32_t seed = 200;
  for (DType type : kTypes)
    if (type != DType::Q4_1)
      for (auto [n, k] : shapes)
        for (int64_t t : {1, 17, 128}) check_case(type, n, k, t, seed++);
}

TEST(Qgemm, LmHeadQ8_0SmallT) {
  for (int64_t t : {1, 2}) check_case(DType::Q8_0, 49152, 576, t, 300 + t);
}

TEST(Qgemm, OddShapesEveryType) {
  const int64_t shapes[][2] = {{1, 32}, {17, 64}, {40, 96}, {100, 160}, {33, 1024}};
  uint32_t seed = 400;
  for (DType type : kTypes)
    for (auto [n, k] : shapes)
      for (int64_t t : {1, 2, 3, 5, 13, 17, 25, 513}) check_case(type, n, k, t, seed++);
}

TEST(Qgemm, IndependentOfThreadCount) {
  std::mt19937 rng(7);
  for (DType type : {DType::Q4_1, DType::Q8_0}) {
    const int64_t n_out = 1536 + 16 * 3 + 5, n_in = 576;
    const auto raw = random_weights(type, n_out, n_in, rng);
    const PackedWeight w = PackedWeight::pack(type, raw.data(), n_out, n_in);
    for (int64_t n_tok : {1, 7, 100}) {
      const auto x = random_acts(n_tok, n_in, rng);
      QuantizedActs xq;
      quantize_activations(x.data(), n_tok, n_in, xq);
      const int saved = omp_get_max_threads();
      for (CpuIsa isa : available_isas()) {
        std::vector<float> y1(n_tok * n_out), y2(n_tok * n_out), y3(n_tok * n_out);
        omp_set_num_threads(1);
        qgemm(w, xq, y1.data(), isa);
        omp_set_num_threads(2);
        qgemm(w, xq, y2.data(), isa);
        omp_set_num_threads(3);  // more threads than cores: a different split again
        qgemm(w, xq, y3.data(), isa);
        EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)))
            << cpu_isa_name(isa) << " T=" << n_tok;
        EXPECT_EQ(0, std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)))
            << cpu_isa_name(isa) << " T=" << n_tok;
      }
      omp_set_num_threads(saved);
    }
  }
}

TEST(Qgemm, RejectsMismatchedInput) {
  std::vector<float> rows(64 * 64, 0.5f);
  const PackedWeight w = PackedWeight::pack(DType::F32, rows.data(), 64, 64);
  std::vector<float> x(32, 1.0f), y(64);
  QuantizedActs xq;
  quantize_activations(x.data(), 1, 32, xq);
  EXPECT_THROW(qgemm(w, xq, y.data()), Error);
  EXPECT_THROW(qgemm(PackedWeight(), x.data(), 1, y.data()), Error);
}

TEST(CpuFeatures, ParseAndForce) {
  EXPECT_EQ(parse_cpu_isa("avx2"), CpuIsa::Avx2);
  EXPECT_THROW(parse_cpu_isa("sse9"), Error);
  force_cpu_isa(CpuIsa::Scalar);
  EXPECT_EQ(cpu_isa(), CpuIsa::Scalar);
  force_cpu_isa(std::nullopt);
  EXPECT_LE(cpu_isa(), cpu_isa_detected());
}

}  // namespace
}  // namespace ic::ops
