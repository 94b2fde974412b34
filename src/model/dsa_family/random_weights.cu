// The random-weight fills on the GPU (random_weights.h): the host's arithmetic, element by element.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "model/dsa_family/random_weights.h"

namespace ic::dsa::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535 * 16));
}

__device__ float value_at(uint64_t key, int64_t i, float a, double post) {
  // The f32 product rounds first, as on the host; __fmul_rn keeps nvcc from contracting it.
  return static_cast<float>(static_cast<double>(__fmul_rn(random_unit(key, static_cast<uint64_t>(i)), a)) * post);
}

__global__ void fill_bf16_kernel(uint16_t* dst, int64_t n, uint64_t key, float a, int64_t i0, double post) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(value_at(key, i0 + i, a, post)));
}

__global__ void fill_f32_kernel(float* dst, int64_t n, uint64_t key, float a, int64_t i0, double post) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = value_at(key, i0 + i, a, post);
}

__global__ void value_kernel(float* dst, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = v;
}

// One thread per element of w_uk_t [H, L, nope].
__global__ void uk_kernel(const uint16_t* kv_b, int64_t H, int64_t nope, int64_t v, int64_t L, uint16_t* out) {
  const int64_t n = H * L * nope;
  for (int64_t x = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; x < n; x += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = x % nope, i = (x / nope) % L, h = x / (nope * L);
    out[x] = kv_b[(h * (nope + v) + j) * L + i];
  }
}

}  // namespace

void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t key, float a, int64_t i0, double post) {
  if (n == 0) return;
  fill_bf16_kernel<<<blocks_for(n), kThreads>>>(dst, n, key, a, i0, post);
  IC_CUDA_CHECK_LAUNCH();
}

void fill_random_f32(float* dst, int64_t n, uint64_t key, float a, int64_t i0, double post) {
  if (n == 0) return;
  fill_f32_kernel<<<blocks_for(n), kThreads>>>(dst, n, key, a, i0, post);
  IC_CUDA_CHECK_LAUNCH();
}

void fill_value_f32(float* dst, int64_t n, float v) {
  if (n == 0) return;
  value_kernel<<<blocks_for(n), kThreads>>>(dst, n, v);
  IC_CUDA_CHECK_LAUNCH();
}

void uk_transpose(const uint16_t* kv_b, int64_t H, int64_t nope, int64_t v, int64_t L, uint16_t* w_uk_t) {
  const int64_t n = H * L * nope;
  if (n == 0) return;
  uk_kernel<<<blocks_for(n), kThreads>>>(kv_b, H, nope, v, L, w_uk_t);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::dsa::cuda
