#pragma once
// Fixed-order block reductions for CUDA kernels: the same inputs give the same bits on every
// run (the determinism the search, the trainer and their tests rely on).
#include <cuda_runtime.h>

namespace ic::cuda {

// Reduces v over the block with `op`: butterfly shuffles inside each warp (the two partners
// combine the same two values, so every lane holds the same bits), then the warps' results in
// warp order. Every thread gets the result. scratch: [kThreads / 32] in shared memory. Must be
// reached by all threads of the block.
template <int kThreads, typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) r = op(r, scratch[w]);
  return r;
}

struct Add {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

}  // namespace ic::cuda
