// The DSA family's small GPU kernels (gpu_kernels.h). Each is memory-bound glue between ops;
// none needs to be clever, all must be exactly the CPU path's arithmetic where it has one (RoPE,
// the latent norm) so that the GPU differs from the reference by its bf16 roundings alone.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "core/cuda_reduce.cuh"
#include "model/dsa_family/gpu_kernels.h"

namespace ic::dsa::gpu::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxRopeDim = 1024;  // shared-memory staging of one rotated slice

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535));
}

__device__ uint16_t bf16_bits(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

// Rotates the `dim` values at x (staged in smem) for position pos, as RopeTable::apply: f32 angle,
// cos/sin in double scaled by the attention factor, pairs by style, output de-interleaved.
__device__ void rotate(const float* in, float* out, int64_t dim, const float* inv_freq, double af, bool interleave,
                       int64_t pos) {
  const int64_t half = dim / 2;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = inv_freq[i] * static_cast<float>(pos);
    const double c = cos(static_cast<double>(angle)) * af, s = sin(static_cast<double>(angle)) * af;
    const double a = interleave ? in[2 * i] : in[i];
    const double b = interleave ? in[2 * i + 1] : in[i + half];
    out[i] = static_cast<float>(a * c - b * s);
    out[i + half] = static_cast<float>(b * c + a * s);
  }
}

__global__ void rope_kernel(float* x, int64_t n_heads, int64_t tok_stride, int64_t head_stride, int64_t off,
                            const float* inv_freq, int64_t dim, double af, bool interleave, int64_t p0) {
  __shared__ float tmp[kMaxRopeDim];
  const int64_t t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  float* row = x + t * tok_stride + h * head_stride + off;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) tmp[i] = row[i];
  __syncthreads();
  rotate(tmp, row, dim, inv_freq, af, interleave, p0 + t);
}

// One block per token: RMSNorm of the latent (sum of squares in double, as the reference's dot),
// then the rope key rotated; both written as bf16 cache rows.
__global__ void kv_rows_kernel(const float* kv_a, int64_t L, const float* norm_w, float eps, const float* inv_freq,
                               int64_t R, double af, bool interleave, int64_t p0, uint16_t* cache) {
  __shared__ double scratch[kThreads / 32];
  __shared__ float rot[kMaxRopeDim];
  const int64_t t = blockIdx.x, row = L + R;
  const float* in = kv_a + t * row;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) ss += static_cast<double>(in[i]) * in[i];
  ss = ic::cuda::block_reduce<kThreads>(ss, ic::cuda::Add{}, scratch);
  const double inv = 1.0 / sqrt(ss / static_cast<double>(L) + static_cast<double>(eps));
  uint16_t* out = cache + (p0 + t) * row;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) out[i] = bf16_bits(static_cast<float>(in[i] * inv * norm_w[i]));
  rotate(in + L, rot, R, inv_freq, af, interleave, p0 + t);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < R; i += blockDim.x) out[L + i] = bf16_bits(rot[i]);
}

__global__ void split_query_kernel(const float* q, int64_t n, int64_t H, int64_t nope, int64_t R, int64_t L,
                                   uint16_t* q_nope_hm, uint16_t* q576) {
  const int64_t qk = nope + R, total = n * H * qk;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (H * qk), h = (i / qk) % H, j = i % qk;
    const uint16_t v = bf16_bits(q[i]);
    if (j < nope)
      q_nope_hm[(h * n + t) * nope + j] = v;
    else
      q576[(t * H + h) * (L + R) + L + (j - nope)] = v;
  }
}

__global__ void heads_to_tokens_kernel(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst,
                                       int64_t dst_stride, int64_t off) {
  const int64_t total = n * H * w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t h = i / (n * w), t = (i / w) % n, j = i % w;
    dst[(t * H + h) * dst_stride + off + j] = bf16_bits(src[i]);
  }
}

__global__ void tokens_to_heads_kernel(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst) {
  const int64_t total = n * H * w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (H * w), h = (i / w) % H, j = i % w;
    dst[(h * n + t) * w + j] = bf16_bits(src[i]);
  }
}

__global__ void causal_indices_kernel(int32_t* idx, int64_t n, int64_t T, int64_t p0) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * T;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / T, j = i % T;
    idx[i] = j <= p0 + t ? static_cast<int32_t>(j) : -1;
  }
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t n, int64_t d) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * d;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += b[i % d];
}

// One warp per row of dim <= 128 values (4 per lane): the row's max |x| by shuffles, then the
// host's divisions (IEEE, as nvcc compiles '/' without fast-math) and a saturating e4m3 rounding.
__global__ void quantize_fp8_kernel(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale, float* fold) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* xr = x + r * dim;
  float v[4], amax = 0.0f;
  for (int i = 0; i < 4; ++i) {
    const int64_t c = lane + 32 * i;
    v[i] = c < dim ? xr[c] : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float s = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
  for (int i = 0; i < 4; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < dim) x8[r * dim + c] = __nv_cvt_float_to_fp8(__fdiv_rn(v[i], s), __NV_SATFINITE, __NV_E4M3);
  }
  if (lane == 0) {
    if (fold) fold[r] = __fmul_rn(fold[r], s);
    if (scale) scale[r] = s;
  }
}

void check_rope(const RopeArgs& r) {
  IC_CHECK(r.dim > 0 && r.dim % 2 == 0 && r.dim <= kMaxRopeDim, "dsa gpu rope: width {} must be even, in [2, {}]",
           r.dim, kMaxRopeDim);
}

}  // namespace

void rope_rows(float* x, int64_t n_tok, int64_t n_heads, int64_t tok_stride, int64_t head_stride, int64_t off,
               const RopeArgs& rope, int64_t p0) {
  check_rope(rope);
  if (n_tok == 0 || n_heads == 0) return;
  IC_CHECK(n_tok * n_heads <= INT32_MAX, "dsa gpu rope: {} rows exceed the grid", n_tok * n_heads);
  rope_kernel<<<static_cast<unsigned>(n_tok * n_heads), 64>>>(x, n_heads, tok_stride, head_stride, off, rope.inv_freq,
                                                              rope.dim, rope.attention_factor, rope.interleave, p0);
  IC_CUDA_CHECK_LAUNCH();
}

void kv_rows(const float* kv_a, int64_t n, int64_t L, const float* norm_w, float eps, const RopeArgs& rope,
             int64_t p0, uint16_t* cache) {
  check_rope(rope);
  if (n == 0) return;
  IC_CHECK(n <= INT32_MAX, "dsa gpu kv_rows: {} tokens exceed the grid", n);
  kv_rows_kernel<<<static_cast<unsigned>(n), kThreads>>>(kv_a, L, norm_w, eps, rope.inv_freq, rope.dim,
                                                         rope.attention_factor, rope.interleave, p0, cache);
  IC_CUDA_CHECK_LAUNCH();
}

void split_query(const float* q, int64_t n, int64_t H, int64_t nope, int64_t R, int64_t L, uint16_t* q_nope_hm,
                 uint16_t* q576) {
  if (n == 0) return;
  split_query_kernel<<<blocks_for(n * H * (nope + R)), kThreads>>>(q, n, H, nope, R, L, q_nope_hm, q576);
  IC_CUDA_CHECK_LAUNCH();
}

void heads_to_tokens(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst, int64_t dst_stride,
                     int64_t off) {
  if (n == 0) return;
  heads_to_tokens_kernel<<<blocks_for(n * H * w), kThreads>>>(src, n, H, w, dst, dst_stride, off);
  IC_CUDA_CHECK_LAUNCH();
}

void tokens_to_heads(const float* src, int64_t n, int64_t H, int64_t w, uint16_t* dst) {
  if (n == 0) return;
  tokens_to_heads_kernel<<<blocks_for(n * H * w), kThreads>>>(src, n, H, w, dst);
  IC_CUDA_CHECK_LAUNCH();
}

void causal_indices(int32_t* idx, int64_t n, int64_t T, int64_t p0) {
  if (n == 0) return;
  causal_indices_kernel<<<blocks_for(n * T), kThreads>>>(idx, n, T, p0);
  IC_CUDA_CHECK_LAUNCH();
}

void add_bias(float* y, const float* b, int64_t n, int64_t d) {
  if (n == 0) return;
  add_bias_kernel<<<blocks_for(n * d), kThreads>>>(y, b, n, d);
  IC_CUDA_CHECK_LAUNCH();
}

void quantize_rows_fp8(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale, float* fold) {
  if (rows == 0) return;
  constexpr int64_t kRowsPerBlock = kThreads / 32;
  IC_CHECK((rows + kRowsPerBlock - 1) / kRowsPerBlock <= INT32_MAX, "quantize_rows_fp8: {} rows exceed the grid", rows);
  quantize_fp8_kernel<<<static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads>>>(x, rows, dim, x8,
                                                                                                     scale, fold);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::dsa::gpu::cuda
