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

namespace {

// Device memory comes from the device's stream-ordered pool (cudaMallocAsync on the legacy
// default stream, which every op runs on): a freed block goes back to the pool in stream order
// and the next allocation of its size reuses it without a device synchronisation, so
// allocating per op costs no cudaMalloc/cudaFree on the hot path. The pool keeps what it holds
// (release threshold: everything); when an allocation fails it is trimmed once and retried.
void init_pool() {
  static const bool done = [] {
    int dev = 0;
    cudaMemPool_t pool = nullptr;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
    return true;
  }();
  (void)done;
}

cudaError_t pool_alloc(void** p, int64_t bytes) {
  init_pool();
  cudaError_t e = cudaMallocAsync(p, static_cast<size_t>(bytes), cudaStreamLegacy);
  if (e != cudaErrorMemoryAllocation) return e;
  cudaGetLastError();
  int dev = 0;
  cudaMemPool_t pool = nullptr;
  cudaDeviceSynchronize();  // frees in flight complete, then give the pool's unused blocks back
  if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess)
    cudaMemPoolTrimTo(pool, 0);
  return cudaMallocAsync(p, static_cast<size_t>(bytes), cudaStreamLegacy);
}

}  // namespace

void* alloc(int64_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t e = pool_alloc(&p, bytes);
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
  if (p) cudaFreeAsync(p, cudaStreamLegacy);
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
