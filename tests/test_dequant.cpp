// Dequantisation against (1) hand-built blocks whose values follow from the ggml formulas
// written element by element below, (2) random blocks with the same formulas, and (3) values
// produced by the gguf Python package (tests/data, see scripts/gen-gguf-test-vectors).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "test_util.h"

namespace ic {
namespace {

void put_f16(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }
double get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Element e of one block, computed in double straight from the ggml definitions. Every
// product involved is exact in double (fp16 scale x small integers), so this is the exact
// value the float32 decoder rounds.
double ref_elem(DType t, const uint8_t* blk, int e) {
  switch (t) {
    case DType::Q4_0: {
      const uint8_t byte = blk[2 + e % 16];
      const int nib = e < 16 ? (byte & 15) : (byte >> 4);
      return (nib - 8) * get_f16(blk);
    }
    case DType::Q4_1: {
      const uint8_t byte = blk[4 + e % 16];
      const int nib = e < 16 ? (byte & 15) : (byte >> 4);
      return nib * get_f16(blk) + get_f16(blk + 2);
    }
    case DType::Q8_0: return static_cast<int8_t>(blk[2 + e]) * get_f16(blk);
    case DType::Q4_K: {
      const uint8_t* s = blk + 4;  // 12 packed bytes of 6-bit scales and mins
      const int sub = e / 32;      // 8 sub-blocks of 32
      int sc, mn;
      if (sub < 4) {
        sc = s[sub] & 63;
        mn = s[sub + 4] & 63;
      } else {  // low 4 bits in s[sub+4], high 2 bits in the top of s[sub-4] / s[sub]
        sc = (s[sub + 4] & 15) | (s[sub - 4] >> 6) << 4;
        mn = (s[sub + 4] >> 4) | (s[sub] >> 6) << 4;
      }
      const uint8_t byte = blk[16 + (e / 64) * 32 + e % 32];
      const int nib = (e % 64) < 32 ? (byte & 15) : (byte >> 4);
      return get_f16(blk) * sc * nib - get_f16(blk + 2) * mn;
    }
    case DType::Q6_K: {
      const int half = e / 128, w = e % 128, l = w % 32, quarter = w / 32;
      const uint8_t lo = blk[64 * half + l + (quarter & 1) * 32];
      const int nib = quarter < 2 ? (lo & 15) : (lo >> 4);
      const int hi = (blk[128 + 32 * half + l] >> (2 * quarter)) & 3;
      const int q = (nib | hi << 4) - 32;
      const int8_t scale = static_cast<int8_t>(blk[192 + e / 16]);
      return get_f16(blk + 208) * scale * q;
    }
    default: ADD_FAILURE() << "no reference for " << dtype_name(t); return 0;
  }
}

// The decoder rounds once at most: Q4_0, Q8_0 products are exact in float (11 + 8 bits), and
// Q4_1 (x*d + m), Q4_K (d*sc*q - dmin*mn) and Q6_K (d*sc*q, 25 bits) each end with one
// float rounding of a value whose partial products are exact. So |err| <= 2^-24 |exact|.
double tol_for(double exact) { return std::ldexp(std::fabs(exact), -24); }

void expect_matches_ref(DType t, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> got(n);
  dequantize_row(t, bytes.data(), got.data(), n);
  const int64_t bs = dtype_block_size(t), bb = dtype_block_bytes(t);
  for (int64_t k = 0; k < n; ++k) {
    const double want = ref_elem(t, bytes.data() + (k / bs) * bb, static_cast<int>(k % bs));
    ASSERT_NEAR(got[k], want, tol_for(want)) << dtype_name(t) << " element " << k;
  }
}

// Byte offsets of the fp16 scale fields inside a block.
std::vector<int> f16_fields(DType t) {
  switch (t) {
    case DType::Q4_0:
    case DType::Q8_0: return {0};
    case DType::Q4_1:
    case DType::Q4_K: return {0, 2};
    case DType::Q6_K: return {208};
    default: return {};
  }
}

TEST(Dequant, PlainTypesKnownValues) {
  const float f[3] = {1.5f, -0.0f, 3e38f};
  float out[3];
  dequantize_row(DType::F32, f, out, 3);
  EXPECT_EQ(std::memcmp(f, out, sizeof f), 0);

  const uint16_t h[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x3555};  // 1, -2, 65504, 2^-24, ~1/3
  float oh[5];
  dequantize_row(DType::F16, h, oh, 5);
  EXPECT_EQ(oh[0], 1.0f);
  EXPECT_EQ(oh[1], -2.0f);
  EXPECT_EQ(oh[2], 65504.0f);
  EXPECT_EQ(oh[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(oh[4], 1.0f / 4 + 0x155 * std::ldexp(1.0f, -12));  // 2^-2 * (1 + 0x155/1024)

  const uint16_t b[3] = {0x3f80, 0xc0a0, 0x0000};  // 1, -5, 0
  float ob[3];
  dequantize_row(DType::BF16, b, ob, 3);
  EXPECT_EQ(ob[0], 1.0f);
  EXPECT_EQ(ob[1], -5.0f);
  EXPECT_EQ(ob[2], 0.0f);
}

TEST(Dequant, Q4_0KnownBlock) {
  std::vector<uint8_t> blk(18);
  put_f16(blk.data(), 0x3800);  // d = 0.5
  for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<uint8_t>(j | (15 - j) << 4);
  std::vector<float> y(32);
  dequantize_row(DType::Q4_0, blk.data(), y.data(), 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f) << j;
  }
}

TEST(Dequant, Q4_1KnownBlock) {
  std::vector<uint8_t> blk(20);
  put_f16(blk.data(), 0x3400);      // d = 0.25
  put_f16(blk.data() + 2, 0xbc00);  // m = -1
  for (int j = 0; j < 16; ++j) blk[4 + j] = static_cast<uint8_t>((3 * j) % 16 | j << 4);
  std::vector<float> y(32);
  dequantize_row(DType::Q4_1, blk.data(), y.data(), 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (3 * j) % 16 * 0.25f - 1.0f) << j;
    EXPECT_EQ(y[j + 16], j * 0.25f - 1.0f) << j;
  }
}

TEST(Dequant, Q8_0KnownBlock) {
  std::vector<uint8_t> blk(34);
  put_f16(blk.data(), 0x3000);  // d = 0.125
  for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128));
  std::vector<float> y(32);
  dequantize_row(DType::Q8_0, blk.data(), y.data(), 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.125f) << j;
}

TEST(Dequant, Q4_KKnownBlock) {
  // Scales and mins above 15 in sub-blocks 4..7 exercise the split 6-bit packing.
  const int sc[8] = {1, 17, 33, 63, 5, 21, 40, 62};
  const int mn[8] = {2, 0, 63, 9, 48, 3, 31, 60};
  std::vector<uint8_t> blk(144);
  put_f16(blk.data(), 0x3c00);      // d = 1
  put_f16(blk.data() + 2, 0x3800);  // dmin = 0.5
  uint8_t* s = blk.data() + 4;
  for (int j = 0; j < 4; ++j) {  // the packing ggml's quantiser writes
    s[j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
    s[j + 4] = static_cast<uint8_t>(mn[j] | (mn[j + 4] >> 4) << 6);
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
  }
  for (int i = 0; i < 128; ++i) blk[16 + i] = static_cast<uint8_t>(i * 7 + 3);
  std::vector<float> y(256);
  dequantize_row(DType::Q4_K, blk.data(), y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32;
    const uint8_t byte = static_cast<uint8_t>((e / 64) * 32 + e % 32) * 7 + 3;
    const int nib = (e % 64) < 32 ? (byte & 15) : (byte >> 4);
    EXPECT_EQ(y[e], 1.0f * sc[sub] * nib - 0.5f * mn[sub]) << e;
  }
}

TEST(Dequant, Q6_KKnownBlock) {
  std::vector<uint8_t> blk(210);
  int8_t scales[16];
  for (int k = 0; k < 16; ++k) scales[k] = static_cast<int8_t>((k * 13) % 40 - 20);
  for (int i = 0; i < 128; ++i) blk[i] = static_cast<uint8_t>(i * 3);
  for (int i = 0; i < 64; ++i) blk[128 + i] = static_cast<uint8_t>(i * 5 + 1);
  std::memcpy(blk.data() + 192, scales, 16);
  put_f16(blk.data() + 208, 0x3800);  // d = 0.5
  std::vector<float> y(256);
  dequantize_row(DType::Q6_K, blk.data(), y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, l = e % 32, quarter = (e % 128) / 32;
    const uint8_t lo = static_cast<uint8_t>((64 * half + l + (quarter & 1) * 32) * 3);
    const int nib = quarter < 2 ? (lo & 15) : (lo >> 4);
    const uint8_t hbyte = static_cast<uint8_t>((32 * half + l) * 5 + 1);
    const int q = (nib | ((hbyte >> (2 * quarter)) & 3) << 4) - 32;
    EXPECT_EQ(y[e], 0.5f * scales[e / 16] * q) << e;
  }
}

TEST(Dequant, RandomBlocksMatchReference) {
  std::mt19937 rng(7);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t nb = 9;
    std::vector<uint8_t> bytes(nb * dtype_block_bytes(t));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    for (int64_t b = 0; b < nb; ++b)
      for (int off : f16_fields(t)) {
        uint16_t h = static_cast<uint16_t>(rng());
        if ((h & 0x7c00) == 0x7c00) h &= 0xbfff;  // no inf/NaN scales: clear an exponent bit
        put_f16(bytes.data() + b * dtype_block_bytes(t) + off, h);
      }
    expect_matches_ref(t, bytes, nb * dtype_block_size(t));
  }
}

TEST(Dequant, TensorDequantKeepsShapeAndRejectsBadInput) {
  std::mt19937 rng(3);
  Tensor q = Tensor::empty(Shape{3, 64}, DType::Q4_1);
  for (int64_t k = 0; k < q.nbytes(); ++k) q.data<uint8_t>()[k] = static_cast<uint8_t>(rng());
  for (int64_t blk = 0; blk < 6; ++blk) {  // finite scales
    put_f16(q.data<uint8_t>() + blk * 20, 0x2e66);
    put_f16(q.data<uint8_t>() + blk * 20 + 2, 0xb266);
  }
  const Tensor f = dequantize(q);
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.shape(), q.shape());
  std::vector<float> row(64);
  for (int r = 0; r < 3; ++r) {
    dequantize_row(DType::Q4_1, q.data<uint8_t>() + r * 40, row.data(), 64);
    EXPECT_EQ(std::memcmp(row.data(), f.data<float>() + r * 64, 64 * 4), 0) << r;
  }
  EXPECT_THROW(dequantize(Tensor::zeros(Shape{4}, DType::I32)), Error);
  float out[32];
  EXPECT_THROW(dequantize_row(DType::Q8_0, q.raw(), out, 31), Error);
}

nlohmann::json load_vectors() {
  const std::string path = std::string(IC_SOURCE_DIR) + "/tests/data/gguf_dequant_vectors.json";
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path);
  return nlohmann::json::parse(in);
}

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t k = 0; k < out.size(); ++k)
    out[k] = static_cast<uint8_t>(std::stoi(hex.substr(2 * k, 2), nullptr, 16));
  return out;
}

DType dtype_by_name(const std::string& name) {
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K})
    if (dtype_name(t) == name) return t;
  throw Error("unknown dtype " + name);
}

// numpy's gguf.quants evaluates the same float32 operations in the same order as ggml, so
// the decoders must agree bit for bit (EXPECT_EQ on floats, no tolerance).
TEST(Dequant, RandomBlocksMatchGgufPython) {
  const nlohmann::json v = load_vectors();
  ASSERT_EQ(v["blocks"].size(), 5u);
  for (const auto& b : v["blocks"]) {
    const DType t = dtype_by_name(b["type"]);
    const std::vector<uint8_t> bytes = from_hex(b["hex"]);
    const int64_t n = b["n"];
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), dtype_row_bytes(t, n));
    std::vector<float> got(n);
    dequantize_row(t, bytes.data(), got.data(), n);
    const std::vector<double> want = b["values"];
    ASSERT_EQ(static_cast<int64_t>(want.size()), n);
    for (int64_t k = 0; k < n; ++k)
      ASSERT_EQ(got[k], static_cast<float>(want[k])) << dtype_name(t) << " element " << k;
  }
}

TEST(Dequant, ModelRowsMatchGgufPython) {
  IC_TEST_MODEL_OR_SKIP(path);
  const gguf::File f = gguf::File::open(path);
  const nlohmann::json v = load_vectors();
  ASSERT_GE(v["model"].size(), 6u);
  for (const auto& r : v["model"]) {
    const gguf::TensorInfo& ti = f.tensor(r["tensor"].get<std::string>());
    EXPECT_EQ(dtype_name(ti.type), r["type"].get<std::string>());
    const int64_t row = r["row"], ne0 = ti.ne[0];
    std::vector<float> got(ne0);
    dequantize_row(ti.type, ti.data + row * dtype_row_bytes(ti.type, ne0), got.data(), ne0);
    const std::vector<int64_t> cols = r["cols"];
    const std::vector<double> want = r["values"];
    for (size_t k = 0; k < cols.size(); ++k)
      EXPECT_EQ(got[cols[k]], static_cast<float>(want[k])) << ti.name << " row " << row
                                                           << " col " << cols[k];
  }
  // The whole-tensor path agrees with the row path on the same model rows.
  const gguf::TensorInfo& q = f.tensor("blk.0.attn_q.weight");
  const Tensor full = dequantize(f.tensor_view(q));
  std::vector<float> row(q.ne[0]);
  dequantize_row(q.type, q.data + 77 * dtype_row_bytes(q.type, q.ne[0]), row.data(), q.ne[0]);
  EXPECT_EQ(std::memcmp(row.data(), full.data<float>() + 77 * q.ne[0], row.size() * 4), 0);
}

}  // namespace
}  // namespace ic
