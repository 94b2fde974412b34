// Teacher targets on the GPU (the math and the host path are in teacher.h / teacher.cpp): the
// logits of a block of R query rows for all heads by cuBLAS (one strided-batched GEMM per KV
// group, f32 arithmetic, the 1/sqrt(head_dim) scale as alpha), then one CUDA block per row for
// the per-head softmaxes, the head mean and the L1 normalisation, all in a fixed order.
// Work: 2 Hq hd P FLOPs for P = n (n + 1) / 2 causal pairs (plus up to R n / 2 per block past
// the diagonal); memory 4 R n Hq bytes of logits besides p.
#include <algorithm>
#include <cmath>

#include "indexcache/cuda_util.cuh"
#include "indexcache/teacher.h"

namespace ic::teacher_detail {

namespace {

using distill_cuda::Add;
using distill_cuda::block_reduce;
using distill_cuda::DeviceArray;
using distill_cuda::gemm_rm;
using distill_cuda::Max;

constexpr int kThreads = 256;
constexpr int64_t kLogitBudgetBytes = int64_t{1} << 30;

// Row t = t0 + blockIdx.x: p[t, s] = mean_h softmax_s(L[h, t, s]) over s <= t, normalised to
// sum 1 (as the host path: f32 max, sum and scaling), zero for s > t. Each thread owns the same
// columns in every loop, so the accumulation into the row needs no barrier.
__global__ void __launch_bounds__(kThreads) target_rows_kernel(const float* logits /* [Hq, R, ldl] */, int64_t ldl,
                                                               int64_t R, int64_t Hq, int64_t t0, int64_t n,
                                                               float* p /* [n, n] */) {
  __shared__ float red[kThreads / 32];
  const int64_t r = blockIdx.x, t = t0 + r, len = t + 1;
  float* row = p + t * n;
  for (int64_t h = 0; h < Hq; ++h) {
    const float* L = logits + (h * R + r) * ldl;
    float m = -INFINITY;
    for (int64_t s = threadIdx.x; s < len; s += kThreads) m = fmaxf(m, L[s]);
    m = block_reduce<kThreads>(m, Max{}, red);
    float z = 0.0f;
    for (int64_t s = threadIdx.x; s < len; s += kThreads) z += expf(L[s] - m);
    z = block_reduce<kThreads>(z, Add{}, red);
    const float inv = 1.0f / (z * static_cast<float>(Hq));
    for (int64_t s = threadIdx.x; s < len; s += kThreads) {
      const float e = expf(L[s] - m) * inv;
      row[s] = h == 0 ? e : row[s] + e;
    }
  }
  float total = 0.0f;
  for (int64_t s = threadIdx.x; s < len; s += kThreads) total += row[s];
  const float inv_total = 1.0f / block_reduce<kThreads>(total, Add{}, red);
  for (int64_t s = threadIdx.x; s < n; s += kThreads) row[s] = s < len ? row[s] * inv_total : 0.0f;
}

__global__ void add_kernel(float* out, const float* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] += x[i];
}
__global__ void scale_kernel(float* out, float a, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] *= a;
}

}  // namespace

Tensor attention_targets_cuda(const Tensor& q, const Tensor& k) {
  const int64_t n = q.dim(0), Hq = q.dim(1), hd = q.dim(2), Hkv = k.dim(1), group = Hq / Hkv;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t R = std::clamp<int64_t>(kLogitBudgetBytes / (4 * Hq * n), int64_t{1}, n);
  Tensor p = Tensor::empty({n, n}, DType::F32, Device::CUDA);
  DeviceArray<float> L(Hq * R * n);
  const float* qd = q.data<float>();  // [n, Hq, hd]
  const float* kd = k.data<float>();  // [n, Hkv, hd]
  for (int64_t t0 = 0; t0 < n; t0 += R) {
    const int64_t rows = std::min(R, n - t0), cols = t0 + rows;
    // L[h, r, s] = scale q[t0 + r, h] . k[s, h / group]: the group's heads as one batch.
    for (int64_t g = 0; g < Hkv; ++g)
      gemm_rm(false, true, rows, cols, hd, scale, qd + t0 * Hq * hd + g * group * hd, Hq * hd, kd + g * hd, Hkv * hd,
              0.0f, L.get() + g * group * rows * n, n, group, hd, 0, rows * n);
    target_rows_kernel<<<static_cast<unsigned>(rows), kThreads>>>(L.get(), n, rows, Hq, t0, n, p.data<float>());
    IC_CUDA_CHECK_LAUNCH();
  }
  return p;
}

void mean_targets_cuda(std::span<const Tensor> targets, Tensor& out) {
  // The host path's arithmetic: ((t0 + t1) + t2 ...) * (1 / m), elementwise.
  const int64_t count = out.numel();
  const unsigned grid = distill_cuda::grid_for(count, 256);
  out.copy_from(targets[0]);
  for (size_t j = 1; j < targets.size(); ++j) {
    add_kernel<<<grid, 256>>>(out.data<float>(), targets[j].data<float>(), count);
    IC_CUDA_CHECK_LAUNCH();
  }
  scale_kernel<<<grid, 256>>>(out.data<float>(), 1.0f / static_cast<float>(targets.size()), count);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::teacher_detail
