#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

namespace ic {
namespace {

TEST(DType, F16RoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    if ((v & 0x7c00) == 0x7c00) continue;  // inf / nan
    EXPECT_EQ(f32_to_f16(f16_to_f32(v)), v) << std::hex << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and the next half (1 + 2^-10): ties go to even (1).
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                        // overflow to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);       // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);       // rounds to zero
}

TEST(DType, Bf16MatchesTruncationPlusRounding) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 10.0f);
  for (int i = 0; i < 10000; ++i) {
    const float x = nd(rng);
    const float y = bf16_to_f32(f32_to_bf16(x));
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * std::ldexp(1.0f, -8));
  }
}

TEST(DType, Fp8E4M3RoundTripsEveryCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    const float f = f8e4m3_to_f32(static_cast<uint8_t>(c));
    if (c == 0x80) continue;  // -0 encodes as 0x80, fine either way
    EXPECT_EQ(f32_to_f8e4m3(f), c) << c;
  }
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(f32_to_f8e4m3(1e9f), 0x7e);  // saturates
}

TEST(Tensor, SliceAndReshapeShareStorage) {
  Tensor t = Tensor::zeros({4, 3}, DType::F32);
  Tensor s = t.slice_rows(1, 3);
  s.data<float>()[0] = 7.0f;
  EXPECT_EQ(t.data<float>()[3], 7.0f);
  EXPECT_THROW(t.reshape({5, 3}), Error);
  EXPECT_THROW(t.slice_rows(2, 5), Error);
}

}  // namespace
}  // namespace ic
