#pragma once
// Element types and scalar conversions (fp16, bf16, fp8 e4m3) shared by every layer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace ic {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  I32,
  F8_E4M3,  // fp8 e4m3fn (no infinities, one NaN pattern)
  // Block-quantised GGUF types: block_size() elements share a block of block_bytes().
  Q4_0,
  Q4_1,
  Q8_0,
  Q4_K,
  Q6_K,
};

std::string_view dtype_name(DType t);
// Elements per block (1 for plain types) and bytes per block.
int64_t dtype_block_size(DType t);
int64_t dtype_block_bytes(DType t);
inline bool dtype_is_quantized(DType t) { return dtype_block_size(t) > 1; }
// Bytes for n elements (n must be a multiple of the block size for quantised types).
int64_t dtype_row_bytes(DType t, int64_t n);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f8e4m3_to_f32(uint8_t v);
// Saturates to +-448 (e4m3fn has no infinity); round to nearest even.
uint8_t f32_to_f8e4m3(float f);

}  // namespace ic
