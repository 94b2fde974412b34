// Block layouts (ggml, little-endian; "d" and "m" are fp16 unless said otherwise):
//   Q4_0 (32 elems, 18 B): d, qs[16]. x[j] = (qs[j] & 15) - 8, x[j+16] = (qs[j] >> 4) - 8,
//                          y = x * d.
//   Q4_1 (32 elems, 20 B): d, m, qs[16]. Same nibble order, y = x * d + m.
//   Q8_0 (32 elems, 34 B): d, int8 qs[32]. y = qs * d.
//   Q4_K (256 elems, 144 B): d, dmin, scales[12], qs[128]. Eight sub-blocks of 32 with a
//     6-bit scale sc and 6-bit min mn each (packing in scale_min_k4). Sub-blocks 2c and 2c+1
//     share qs[32c .. 32c+32): low nibbles are sub-block 2c, high nibbles 2c+1.
//     y = (d * sc) * q - (dmin * mn).
//   Q6_K (256 elems, 210 B): ql[128], qh[64], int8 scales[16], d. Two halves of 128; in half
//     h with ql' = ql + 64h, qh' = qh + 32h, for l < 32:
//       q(l)      = (ql'[l]    & 15) | ((qh'[l] >> 0) & 3) << 4
//       q(l + 32) = (ql'[l+32] & 15) | ((qh'[l] >> 2) & 3) << 4
//       q(l + 64) = (ql'[l]    >> 4) | ((qh'[l] >> 4) & 3) << 4
//       q(l + 96) = (ql'[l+32] >> 4) | ((qh'[l] >> 6) & 3) << 4
//     and element e of the block is y = d * scales[e / 16] * (q - 32).
// The arithmetic order matches ggml's reference (dequantize_row_*), so results are
// bit-identical to it and to the gguf Python package.
#include "io/dequant.h"

#include <cstring>

#include "core/error.h"

namespace ic {
namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

void dequant_q4_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 18, y += 32) {
    const float d = load_f16(src);
    const uint8_t* qs = src + 2;  // [16]
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
      y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 20, y += 32) {
    const float d = load_f16(src);
    const float m = load_f16(src + 2);
    const uint8_t* qs = src + 4;  // [16]
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
      y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

void dequant_q8_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 34, y += 32) {
    const float d = load_f16(src);
    const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);  // [32]
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
  }
}

// 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes q: sub-blocks 0-3 keep
// theirs in the low 6 bits of q[j] and q[j+4]; 4-7 take a low nibble from q[j+4] and their
// top two bits from the spare high bits of q[j-4] (scale) and q[j] (min).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *mn = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void dequant_q4_k(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 144) {
    const float d = load_f16(src);
    const float dmin = load_f16(src + 2);
    const uint8_t* scales = src + 4;  // [12]
    const uint8_t* q = src + 16;      // [128]
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, mn;
      scale_min_k4(2 * c, scales, &sc, &mn);
      const float d1 = d * sc, m1 = dmin * mn;
      scale_min_k4(2 * c + 1, scales, &sc, &mn);
      const float d2 = d * sc, m2 = dmin * mn;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequant_q6_k(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += 210) {
    const uint8_t* ql = src;                                         // [128]
    const uint8_t* qh = src + 128;                                   // [64]
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);  // [16]
    const float d = load_f16(src + 208);
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8, y += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
        const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
        const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  const int64_t bs = dtype_block_size(type);
  IC_CHECK(n >= 0 && n % bs == 0, "dequantize_row: {} elements is not a multiple of the {} "
           "block size {}", n, dtype_name(type), bs);
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t nb = n / bs;
  switch (type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t k = 0; k < n; ++k) dst[k] = f16_to_f32(load_u16(s + 2 * k));
      return;
    case DType::BF16:
      for (int64_t k = 0; k < n; ++k) dst[k] = bf16_to_f32(load_u16(s + 2 * k));
      return;
    case DType::Q4_0: dequant_q4_0(s, dst, nb); return;
    case DType::Q4_1: dequant_q4_1(s, dst, nb); return;
    case DType::Q8_0: dequant_q8_0(s, dst, nb); return;
    case DType::Q4_K: dequant_q4_k(s, dst, nb); return;
    case DType::Q6_K: dequant_q6_k(s, dst, nb); return;
    default: fail("dequantize_row: dtype {} is not supported", dtype_name(type));
  }
}

Tensor dequantize(const Tensor& t) {
  IC_CHECK(t.defined(), "dequantize: undefined tensor");
  IC_CHECK(t.device() == Device::CPU, "dequantize: {} is not on the CPU", t.desc());
  // Checked here because the row loop below runs inside an OpenMP region, which must not throw.
  switch (t.dtype()) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_0: case DType::Q4_1:
    case DType::Q8_0: case DType::Q4_K: case DType::Q6_K: break;
    default: fail("dequantize: {} has a dtype with no decoder", t.desc());
  }
  Tensor out = Tensor::empty(t.shape(), DType::F32);
  const int64_t n = t.numel();
  if (n == 0) return out;
  // Whole rows keep each call on block boundaries; rows are independent.
  const int64_t row = t.rank() > 0 ? t.dim(-1) : 1;
  const int64_t rows = n / row;
  const int64_t row_bytes = dtype_row_bytes(t.dtype(), row);
  const auto* src = static_cast<const uint8_t*>(t.raw());
  float* dst = out.data<float>();
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t.dtype(), src + r * row_bytes, dst + r * row, row);
  return out;
}

}  // namespace ic
