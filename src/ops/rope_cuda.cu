// RoPE on the GPU, one block per token. As on the CPU, each pair's angle is formed in double
// (positions reach 10^5 and beyond, where a float angle loses ~1e-2 rad), its cos and sin are
// rounded to float once per token in shared memory, and every head rotates with them in float.
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "ops/rope.h"

namespace ic::ops::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void rope_kernel(RopeParams p) {
  extern __shared__ float cs[];  // [rot_dim / 2][2]: cos, sin of each pair at this token
  const int64_t half = p.rot_dim / 2;
  const int64_t t = blockIdx.x;
  const double pos = static_cast<double>(p.pos[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const double inv_freq = pow(static_cast<double>(p.theta_base), -2.0 * static_cast<double>(i) / p.rot_dim);
    double s, c;
    sincos(pos * inv_freq, &s, &c);
    cs[2 * i] = static_cast<float>(c);
    cs[2 * i + 1] = static_cast<float>(s);
  }
  __syncthreads();
  float* row = p.x + t * p.row_stride;
  for (int64_t k = threadIdx.x; k < p.n_heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    float* x = row + h * p.head_dim;
    const int64_t a = p.style == RopeStyle::kAdjacent ? 2 * i : i;
    const int64_t b = p.style == RopeStyle::kAdjacent ? 2 * i + 1 : i + half;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const float xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xa * s + xb * c;
  }
}

}  // namespace

void rope(const RopeParams& p) {
  if (p.n_tok == 0) return;
  IC_CHECK(p.n_tok <= INT32_MAX, "rope: {} tokens exceed the CUDA grid", p.n_tok);
  const size_t shared = static_cast<size_t>(p.rot_dim) * sizeof(float);
  IC_CHECK(shared <= 48 * 1024, "rope: rot_dim {} needs more shared memory than a block has", p.rot_dim);
  rope_kernel<<<static_cast<unsigned>(p.n_tok), kThreads, shared>>>(p);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
