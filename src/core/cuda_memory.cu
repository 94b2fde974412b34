#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_memory.h"
#include "core/error.h"

namespace ic {

bool cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess) return n > 0;
  cudaGetLastError();  // no driver or no device: clear the error so the next launch check does not see it
  return false;
}

namespace cuda {

void* alloc(int64_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes));
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("GPU allocation of {} bytes ({:.1f} MiB) failed: {} ({:.1f} MiB free of {:.1f} MiB)", bytes,
         bytes / 1048576.0, cudaGetErrorString(e), free_b / 1048576.0, total_b / 1048576.0);
  }
  return p;
}

void free(void* p) {
  if (p) cudaFree(p);
}

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, int64_t bytes) {
  if (bytes == 0) return;
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dst_dev == Device::CUDA && src_dev == Device::CPU) kind = cudaMemcpyHostToDevice;
  if (dst_dev == Device::CPU && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToHost;
  if (dst_dev == Device::CUDA && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToDevice;
  IC_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(bytes), kind));
}

void synchronize() { IC_CUDA_CHECK(cudaDeviceSynchronize()); }

void memset_zero(void* p, int64_t bytes) { IC_CUDA_CHECK(cudaMemset(p, 0, static_cast<size_t>(bytes))); }

}  // namespace cuda
}  // namespace ic
