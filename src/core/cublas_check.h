#pragma once
// cuBLAS calls are checked like CUDA calls (core/cuda_check.h): a failure becomes ic::Error
// naming the status, the call and the place. For CUDA sources only.
#include <cublas_v2.h>

#include "core/error.h"

#define IC_CUBLAS_CHECK(call)                                                                       \
  do {                                                                                              \
    const cublasStatus_t ic_st_ = (call);                                                           \
    if (ic_st_ != CUBLAS_STATUS_SUCCESS)                                                            \
      ::ic::fail("cuBLAS error {} at {}:{}: {}", cublasGetStatusString(ic_st_), __FILE__, __LINE__, \
                 #call);                                                                            \
  } while (0)
