// SwiGLU gate on the GPU: one grid-stride pass, expf (not the faster __expf) so the result is
// within a few ulp of the double reference.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "ops/swiglu.h"

namespace ic::ops::cuda {

namespace {

constexpr int kThreads = 256;

// `out` may alias gate or up: each element is read, then written, by the same thread.
__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

}  // namespace

void swiglu(const SwigluParams& p) {
  if (p.n == 0) return;
  const int64_t blocks = std::min<int64_t>((p.n + kThreads - 1) / kThreads, 65536);
  swiglu_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(p.gate, p.up, p.out, p.n);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
