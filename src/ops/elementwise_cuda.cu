// Residual add and KV-cache store on the GPU: grid-stride loops over contiguous elements, so
// consecutive threads touch consecutive addresses in every array.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "ops/elementwise.h"

namespace ic::ops::cuda {

namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536)); }

__global__ void add_kernel(float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    a[i] += b[i];
}

// __float2bfloat16_rn: round to nearest even, as f32_to_bf16 on the host.
__global__ void to_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i]));
}

// Element e of src [n_tok, n_kv_heads, head_dim] goes to row pos0 + t of head g in the cache.
__global__ void kv_store_kernel(KvStoreParams p) {
  const int64_t n = p.n_tok * p.n_kv_heads * p.head_dim;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = e % p.head_dim;
    const int64_t g = (e / p.head_dim) % p.n_kv_heads;
    const int64_t t = e / (p.head_dim * p.n_kv_heads);
    p.cache[(g * p.capacity + p.pos0 + t) * p.head_dim + c] = p.src[e];
  }
}

}  // namespace

void to_bf16(const ToBf16Params& p) {
  if (p.n == 0) return;
  to_bf16_kernel<<<grid_for(p.n), kThreads>>>(p.src, p.dst, p.n);
  IC_CUDA_CHECK_LAUNCH();
}

void add_inplace(const AddParams& p) {
  if (p.n == 0) return;
  add_kernel<<<grid_for(p.n), kThreads>>>(p.a, p.b, p.n);
  IC_CUDA_CHECK_LAUNCH();
}

void kv_store(const KvStoreParams& p) {
  const int64_t n = p.n_tok * p.n_kv_heads * p.head_dim;
  if (n == 0) return;
  kv_store_kernel<<<grid_for(n), kThreads>>>(p);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
