// LayerNorm on the GPU: one warp per row (the indexer's rows are short, 64 or 128 values),
// two passes over the row held in registers, f32 sums reduced as a tree through the lanes.
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "ops/layer_norm.h"

namespace ic::ops::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// `out` may alias `x`: a lane writes only the elements it read, after both reductions.
__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* out, int64_t n_rows,
                                  int64_t dim, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const float* xr = x + row * dim;
  float* orow = out + row * dim;
  float s = 0.0f;
  for (int64_t j = lane; j < dim; j += 32) s += xr[j];
  const float mean = warp_sum(s) / static_cast<float>(dim);
  float ss = 0.0f;
  for (int64_t j = lane; j < dim; j += 32) ss = fmaf(xr[j] - mean, xr[j] - mean, ss);
  const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t j = lane; j < dim; j += 32) orow[j] = (xr[j] - mean) * inv * w[j] + b[j];
}

}  // namespace

void layer_norm(const LayerNormParams& p) {
  if (p.n_rows == 0) return;
  const int64_t blocks = (p.n_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  IC_CHECK(blocks <= INT32_MAX, "layer_norm: {} rows exceed the CUDA grid", p.n_rows);
  layer_norm_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32>>>(p.x, p.weight, p.bias, p.out, p.n_rows,
                                                                           p.dim, p.eps);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
