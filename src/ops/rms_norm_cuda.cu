// RMSNorm on the GPU: one block per row, the sum of squares reduced in f32 through the warps
// (a tree, so its rounding error grows like log2(dim) rather than dim).
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "ops/rms_norm.h"

namespace ic::ops::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < blockDim.x / 32 ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // every thread holds the total
}

// `out` may alias `x`: each thread rewrites only the elements it read, after the barrier in
// block_sum has seen every read of the row.
__global__ void rms_norm_kernel(const float* x, const float* w, float* out, int64_t dim, float eps) {
  __shared__ float scratch[kThreads / 32];
  const float* xr = x + blockIdx.x * dim;
  float* orow = out + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) ss = fmaf(xr[j], xr[j], ss);
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) orow[j] = xr[j] * inv * w[j];
}

}  // namespace

void rms_norm(const RmsNormParams& p) {
  if (p.n_rows == 0) return;
  IC_CHECK(p.n_rows <= INT32_MAX, "rms_norm: {} rows exceed the CUDA grid", p.n_rows);
  rms_norm_kernel<<<static_cast<unsigned>(p.n_rows), kThreads>>>(p.x, p.weight, p.out, p.dim, p.eps);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
