#pragma once
// Every CUDA call and launch is checked; failures become ic::Error naming the call and place.
#include <cuda_runtime.h>

#include "core/error.h"

#define IC_CUDA_CHECK(call)                                                               \
  do {                                                                                    \
    const cudaError_t ic_err_ = (call);                                                   \
    if (ic_err_ != cudaSuccess)                                                           \
      ::ic::fail("CUDA error {} at {}:{}: {}", cudaGetErrorString(ic_err_), __FILE__,     \
                 __LINE__, #call);                                                        \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define IC_CUDA_CHECK_LAUNCH() IC_CUDA_CHECK(cudaGetLastError())
