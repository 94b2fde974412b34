#pragma once
// Device memory primitives. cuda_memory.cu implements them with the CUDA runtime; in a CPU
// build cuda_memory_none.cpp throws a clear error instead.
#include <cstdint>

#include "core/device.h"

namespace ic::cuda {

void* alloc(int64_t bytes);  // throws ic::Error when out of memory, naming the size
void free(void* p);
// Copy between any two devices (CPU<->CUDA, CUDA<->CUDA); synchronous.
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, int64_t bytes);
void memset_zero(void* p, int64_t bytes);
// Wait for all queued GPU work (for timing phases of a forward pass).
void synchronize();

}  // namespace ic::cuda
