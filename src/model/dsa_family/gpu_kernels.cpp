// The fronts of the GPU path's small kernels (gpu_kernels.h) and their CPU versions: the same
// arithmetic as the CUDA kernels (f32 angle and double cos/sin for RoPE, a double sum of squares
// for the latent's RMSNorm, round to nearest even for bf16), so that the whole GPU path can run
// on the host in CPU-only builds and its tests check its logic there.
#include "model/dsa_family/gpu_kernels.h"

#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/indexer.h"

namespace ic::dsa::gpu {

namespace {

// RopeTable::apply's arithmetic on `in` (dim values) into `out` for position pos.
void rotate(const float* in, float* out, const RopeArgs& r, int64_t pos) {
  const int64_t half = r.dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = r.inv_freq[i] * static_cast<float>(pos);
    const double c = std::cos(static_cast<double>(angle)) * r.attention_factor;
    const double s = std::sin(static_cast<double>(angle)) * r.attention_factor;
    const double a = r.interleave ? in[2 * i] : in[i];
    const double b = r.interleave ? in[2 * i + 1] : in[i + half];
    out[i] = static_cast<float>(a * c - b * s);
    out[i + half] = static_cast<float>(b * c + a * s);
  }
}

void rope_rows_cpu(float* x, int64_t n_tok, int64_t n_heads, int64_t tok_stride, int64_t head_stride, int64_t off,
                   const RopeArgs& rope, int64_t p0) {
  std::vector<float> tmp(static_cast<size_t>(rope.dim));
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      float* row = x + t * tok_stride + h * head_stride + off;
      tmp.assign(row, row + rope.dim);
      rotate(tmp.data(), row, rope, p0 + t);
    }
}

void kv_rows_cpu(const float* kv_a, int64_t n, int64_t L, const float* norm_w, float eps, const RopeArgs& rope,
                 int64_t p0, uint16_t* cache) {
  const int64_t R = rope.dim, row = L + R;
  std::vector<float> rot(static_cast<size_t>(R));
  for (int64_t t = 0; t < n; ++t) {
    const float* in = kv_a + t * row;
    double ss = 0.0;
    for (int64_t i = 0; i < L; ++i) ss += static_cast<double>(in[i]) * in[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(L) + static_cast<double>(eps));
    uint16_t* out = cache + (p0 + t) * row;
    for (int64_t i = 0; i < L; ++i) out[i] = f32_to_bf16(static_cast<float>(in[i] * inv * norm_w[i]));
    rotate(in + L, rot.data(), rope, p0 + t);
    for (int64_t i = 0; i < R; ++i) out[L + i] = f32_to_bf16(rot[i]);
  }
}

}  // namespace

void rope_rows(Device dev, float* x, int64_t n_tok, int64_t n_heads, int64_t tok_stride, int64_t head_stride,
               int64_t off, const RopeArgs& rope, int64_t p0) {
  IC_CHECK(rope.dim > 0 && rope.dim % 2 == 0, "dsa rope: width {} must be even and positive", rope.dim);
  if (dev == Device::CUDA) return cuda::rope_rows(x, n_tok, n_heads, tok_stride, head_stride, off, rope, p0);
  rope_rows_cpu(x, n_tok, n_heads, tok_stride, head_stride, off, rope, p0);
}

void kv_rows(Device dev, const float* kv_a, int64_t n, int64_t L, const float* norm_w, float eps,
             const RopeArgs& rope, int64_t p0, uint16_t* cache) {
  IC_CHECK(rope.dim > 0 && rope.dim % 2 == 0, "dsa kv_rows: rope width {} must be even and positive", rope.dim);
  if (dev == Device::CUDA) return cuda::kv_rows(kv_a, n, L, norm_w, eps, rope, p0, cache);
  kv_rows_cpu(kv_a, n, L, norm_w, eps, rope, p0, cache);
}

void split_query(Device dev, const float* q, int64_t n, int64_t H, int64_t nope, int64_t R, int64_t L,
                 uint16_t* q_nope_hm, uint16_t* q576) {
  if (dev == Device::CUDA) return cuda::split_query(q, n, H, nope, R, L, q_nope_hm, q576);
  const int64_t qk = nope + R;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < qk; ++j) {
        const uint16_t v = f32_to_bf16(q[(t * H + h) * qk + j]);
        if (j < nope)
          q_nope_hm[(h * n + t) * nope + j] = v;
        else
          q576[(t * H + h) * (L + R) + L + (j - nope)] = v;
      }
}

void heads_to_tokens(Device dev, const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst,
                     int64_t dst_stride, int64_t off) {
  if (dev == Device::CUDA) return cuda::heads_to_tokens(src, n, H, w, dst, dst_stride, off);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < w; ++j) dst[(t * H + h) * dst_stride + off + j] = f32_to_bf16(src[(h * n + t) * w + j]);
}

void tokens_to_heads(Device dev, const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst) {
  if (dev == Device::CUDA) return cuda::tokens_to_heads(src, n, H, w, dst);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < w; ++j) dst[(h * n + t) * w + j] = f32_to_bf16(src[(t * H + h) * w + j]);
}

void causal_indices(Device dev, int32_t* idx, int64_t n, int64_t T, int64_t p0) {
  if (dev == Device::CUDA) return cuda::causal_indices(idx, n, T, p0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < T; ++j) idx[t * T + j] = j <= p0 + t ? static_cast<int32_t>(j) : -1;
}

void add_bias(Device dev, float* y, const float* b, int64_t n, int64_t d) {
  if (dev == Device::CUDA) return cuda::add_bias(y, b, n, d);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) y[t * d + i] += b[i];
}

void quantize_rows_fp8(Device dev, const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale,
                       float* fold) {
  IC_CHECK(dim >= 1 && dim <= ops::kFp8BlockSize, "quantize_rows_fp8: {} values per row (1 to {})", dim,
           ops::kFp8BlockSize);
  if (dev == Device::CUDA) return cuda::quantize_rows_fp8(x, rows, dim, x8, scale, fold);
  std::vector<float> s(static_cast<size_t>(rows));
  ops::quantize_fp8_rows(x, rows, dim, x8, s.data());
  for (int64_t r = 0; r < rows; ++r) {
    if (fold) fold[r] *= s[static_cast<size_t>(r)];
    if (scale) scale[r] = s[static_cast<size_t>(r)];
  }
}

}  // namespace ic::dsa::gpu
