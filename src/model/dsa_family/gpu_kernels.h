#pragma once
// The few small kernels the DSA family's GPU forward needs between the ops (model/dsa_family/
// gpu_forward.h): the family's own RoPE (its inverse-frequency table, YaRN's attention factor and
// HF's de-interleaving output, which ops::rope has none of), the latent cache rows, and the
// reshuffles between the absorbed MLA's token-major and head-major layouts. bf16 values are their
// 16-bit patterns, rounded to nearest even. Each front takes the device its pointers are on: the
// CPU versions (gpu_kernels.cpp) run the GPU path's arithmetic on the host, so that the path is
// tested in CPU-only builds too; the CUDA ones are gpu_kernels.cu (gpu_kernels_none.cpp in a
// CPU-only build says that CUDA is not compiled in).
#include <cstdint>

#include "core/device.h"

namespace ic::dsa::gpu {

// The rotary table of model/dsa_family/rope.h on the device.
struct RopeArgs {
  const float* inv_freq;    // [dim / 2]
  int64_t dim;              // rotated width (qk_rope_head_dim), even
  double attention_factor;  // cos and sin are scaled by it (1 for "default")
  bool interleave;          // MlaRope::Interleave: pairs (2i, 2i+1), written de-interleaved
};

// Rotates x[t * tok_stride + h * head_stride + off + (0 .. dim)] for position p0 + t, in place,
// exactly as RopeTable::apply does (f32 angle, cos/sin in double).
void rope_rows(Device dev, float* x, int64_t n_tok, int64_t n_heads, int64_t tok_stride, int64_t head_stride,
               int64_t off, const RopeArgs& rope, int64_t p0);

// The latent cache rows of n tokens: from kv_a [n, L + R] (kv_a_proj_with_mqa's output) the
// RMSNorm'd latent (weight [L], eps) and the RoPE'd rope key, as bf16 into cache rows
// [p0, p0 + n) of a [capacity, L + R] cache.
void kv_rows(Device dev, const float* kv_a, int64_t n, int64_t L, const float* norm_w, float eps,
             const RopeArgs& rope, int64_t p0, uint16_t* cache);

// q [n, H, nope + R] (RoPE applied) -> q_nope_hm bf16 [H, n, nope] and the rope part as bf16 into
// q576[t, h, L .. L + R) of a [n, H, L + R] buffer.
void split_query(Device dev, const float* q, int64_t n, int64_t H, int64_t nope, int64_t R, int64_t L,
                 uint16_t* q_nope_hm, uint16_t* q576);

// src f32 [H, n, w] (head-major) -> dst bf16 [n, H, dst_stride] at column offset off.
void heads_to_tokens(Device dev, const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst,
                     int64_t dst_stride, int64_t off);
// src f32 [n, H, w] (token-major) -> dst bf16 [H, n, w].
void tokens_to_heads(Device dev, const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst);

// Dense attention as an index list: idx[t, j] = j for j <= p0 + t, else -1; idx [n, T].
void causal_indices(Device dev, int32_t* idx, int64_t n, int64_t T, int64_t p0);

// y[t, :] += b for every row t of y [n, d].
void add_bias(Device dev, float* y, const float* b, int64_t n, int64_t d);

// The fp8 indexer's operands: rows of `dim` (<= 128) values to e4m3 with one scale per row, as
// ops::quantize_fp8_rows computes them (scale = max|x| / 448, 1 for an all-zero row; e4m3(x /
// scale), saturated). With `fold` (the query) each row's scale is multiplied into fold[row] (its
// head weight, ops::quantize_indexer_query) and `scale` may be null; else written to scale[row].
void quantize_rows_fp8(Device dev, const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale,
                       float* fold);

namespace cuda {
// Device pointers; the same contracts as the fronts.
void rope_rows(float* x, int64_t n_tok, int64_t n_heads, int64_t tok_stride, int64_t head_stride, int64_t off,
               const RopeArgs& rope, int64_t p0);
void kv_rows(const float* kv_a, int64_t n, int64_t L, const float* norm_w, float eps, const RopeArgs& rope,
             int64_t p0, uint16_t* cache);
void split_query(const float* q, int64_t n, int64_t H, int64_t nope, int64_t R, int64_t L, uint16_t* q_nope_hm,
                 uint16_t* q576);
void heads_to_tokens(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst, int64_t dst_stride,
                     int64_t off);
void tokens_to_heads(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst);
void causal_indices(int32_t* idx, int64_t n, int64_t T, int64_t p0);
void add_bias(float* y, const float* b, int64_t n, int64_t d);
void quantize_rows_fp8(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale, float* fold);
}  // namespace cuda

}  // namespace ic::dsa::gpu
