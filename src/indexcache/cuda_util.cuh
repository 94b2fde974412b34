#pragma once
// Helpers shared by the GPU distillation files (distill_loss_cuda.cu, teacher_cuda.cu):
// row-major f32 GEMMs through cuBLAS and owned device scratch (block reductions: core/cuda_reduce.cuh).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <memory>

#include "core/cublas_check.h"
#include "core/cuda_check.h"
#include "core/cuda_memory.h"
#include "core/cuda_reduce.cuh"
#include "core/error.h"

namespace ic::distill_cuda {

// One cuBLAS handle per host thread and device, on the legacy default stream like every op.
// The same reasoning as ops/linear_cuda.cu (whose handle is private to that file): a handle is
// too costly to make per call and must not be shared between threads.
inline cublasHandle_t blas() {
  struct Handle {
    int device = -1;
    cublasHandle_t h = nullptr;
    ~Handle() {
      if (h) cublasDestroy(h);
    }
  };
  thread_local Handle handle;
  int dev = 0;
  IC_CUDA_CHECK(cudaGetDevice(&dev));
  if (!handle.h || handle.device != dev) {
    if (handle.h) cublasDestroy(handle.h);
    handle.h = nullptr;
    IC_CUBLAS_CHECK(cublasCreate(&handle.h));
    IC_CUBLAS_CHECK(cublasSetStream(handle.h, nullptr));
    handle.device = dev;
  }
  return handle.h;
}

inline int blas_int(int64_t v, const char* what) {
  IC_CHECK(v >= 0 && v <= INT_MAX, "distillation GEMM: {} = {} exceeds cuBLAS's 32-bit sizes", what, v);
  return static_cast<int>(v);
}

// Row-major C [M, N] = alpha A' B' + beta C with leading dims (elements): A' = A [M, K], or A^T
// with A stored [K, M] when ta; B' = B [K, N], or B^T with B stored [N, K] when tb. f32 inputs,
// f32 arithmetic (CUBLAS_COMPUTE_32F: no TF32). cuBLAS is column-major, so this computes
// C^T = B'^T A'^T on the same memory. Batched: `batch` products, A, B and C advanced by
// their strides (elements; 0 = shared).
inline void gemm_rm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int64_t batch = 1,
                    int64_t stride_a = 0, int64_t stride_b = 0, int64_t stride_c = 0) {
  if (M == 0 || N == 0 || batch == 0) return;
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = blas_int(N, "N"), n = blas_int(M, "M"), k = blas_int(K, "K");
  if (batch == 1) {
    IC_CUBLAS_CHECK(cublasGemmEx(blas(), opb, opa, m, n, k, &alpha, B, CUDA_R_32F, blas_int(ldb, "ldb"), A,
                                         CUDA_R_32F, blas_int(lda, "lda"), &beta, C, CUDA_R_32F,
                                         blas_int(ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  IC_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      blas(), opb, opa, m, n, k, &alpha, B, CUDA_R_32F, blas_int(ldb, "ldb"), stride_b, A, CUDA_R_32F,
      blas_int(lda, "lda"), stride_a, &beta, C, CUDA_R_32F, blas_int(ldc, "ldc"), stride_c, blas_int(batch, "batch"),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

using cuda::Add;
using cuda::block_reduce;
using cuda::Max;

// Owned device scratch of `count` elements of T (uninitialised; freed on scope exit).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t count) : p_(static_cast<T*>(cuda::alloc(count * static_cast<int64_t>(sizeof(T))))) {}
  ~DeviceArray() { cuda::free(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};

inline unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > 65535 * 16 ? 65535 * 16 : blocks);  // grid-stride beyond
}

}  // namespace ic::distill_cuda
