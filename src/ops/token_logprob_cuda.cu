// Token log-probabilities on the GPU: one block of 256 threads per row. Each thread strides
// over the row (coalesced), keeps its max, then its sum of exp(x - max); both reduce through
// the warps and then across the 8 warps in a fixed order, so a row gives the same bits on
// every run. Bytes: the row is read twice (4 * vocab * 2); at vocab 49,152 and 2,048 rows,
// 0.8 GB, about 0.2 ms at the H200's copy rate, against ~400 MB that crossing to the host costs.
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_reduce.cuh"
#include "ops/token_logprob.h"

namespace ic::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
using ic::cuda::block_reduce;

__global__ void token_logprob_kernel(const float* logits, const int32_t* target, float* out, int64_t vocab) {
  __shared__ float scratch[kWarps];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) mx = fmaxf(mx, row[v]);
  mx = block_reduce<kThreads>(mx, ic::cuda::Max{}, scratch);
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) sum += expf(row[v] - mx);
  sum = block_reduce<kThreads>(sum, ic::cuda::Add{}, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = row[target[blockIdx.x]] - mx - logf(sum);
}

}  // namespace

void token_logprob(const TokenLogprobParams& p) {
  if (p.n_rows == 0) return;
  IC_CHECK(p.n_rows <= INT32_MAX, "token_logprob: {} rows exceed the CUDA grid", p.n_rows);
  token_logprob_kernel<<<static_cast<unsigned>(p.n_rows), kThreads>>>(p.logits, p.target, p.out, p.vocab);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
