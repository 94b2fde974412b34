// y = x @ W^T on the GPU through cuBLAS in full f32 arithmetic (CUBLAS_COMPUTE_32F: no TF32,
// whose 10-bit mantissa would put GPU results ~1e-3 away from the CPU reference).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <memory>

#include "core/cublas_check.h"
#include "core/cuda_check.h"
#include "ops/linear.h"

namespace ic::ops::cuda {

namespace {

// A cuBLAS handle costs milliseconds and device memory to create, so it cannot be made per
// call, and cuda::linear's signature (fixed by the op front in linear.h) carries no context.
// Each host thread therefore keeps one, made on first use for the current device and destroyed
// at thread exit; per thread because a handle must not be used by two threads at once. When the
// engine gains streams, this becomes a member of an execution context passed in by the caller.
class BlasHandle {
 public:
  explicit BlasHandle(int device) : device_(device) {
    IC_CUBLAS_CHECK(cublasCreate(&handle_));
    IC_CUBLAS_CHECK(cublasSetStream(handle_, nullptr));  // the legacy default stream, like every op
  }
  ~BlasHandle() { cublasDestroy(handle_); }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  int device() const { return device_; }
  cublasHandle_t get() const { return handle_; }

 private:
  int device_ = -1;
  cublasHandle_t handle_ = nullptr;
};

cublasHandle_t handle_for_current_device() {
  thread_local std::unique_ptr<BlasHandle> h;
  int dev = 0;
  IC_CUDA_CHECK(cudaGetDevice(&dev));
  if (!h || h->device() != dev) {
    h.reset();
    h = std::make_unique<BlasHandle>(dev);
  }
  return h->get();
}

}  // namespace

void linear(const float* w, const float* x, float* y, int64_t n_tok, int64_t n_out, int64_t n_in) {
  if (n_tok == 0 || n_out == 0) return;
  IC_CHECK(n_tok <= INT_MAX && n_out <= INT_MAX && n_in <= INT_MAX,
           "linear: {}x{}x{} exceeds cuBLAS's 32-bit dimensions", n_tok, n_out, n_in);
  const float alpha = 1.0f, beta = 0.0f;
  // cuBLAS is column-major: row-major y [n_tok, n_out] is column-major y^T [n_out, n_tok] =
  // W [n_out, n_in] @ x^T, where row-major W and x read as column-major W^T and x^T.
  IC_CUBLAS_CHECK(cublasGemmEx(handle_for_current_device(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_out),
                               static_cast<int>(n_tok), static_cast<int>(n_in), &alpha, w, CUDA_R_32F,
                               static_cast<int>(n_in), x, CUDA_R_32F, static_cast<int>(n_in), &beta, y, CUDA_R_32F,
                               static_cast<int>(n_out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace ic::ops::cuda
