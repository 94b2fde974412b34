#pragma once
// Dequantisation of GGUF tensor types to float32, exactly as ggml defines each block
// layout (see dequant.cpp). These are the plain reference decoders; fused fast paths in
// src/ops compare against them.
#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"

namespace ic {

// Decode n elements starting at a block boundary of `src` into dst[n]. n must be a multiple
// of the type's block size. Types: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Any supported type -> a new F32 CPU tensor of the same shape (F32 input is copied).
Tensor dequantize(const Tensor& t);

}  // namespace ic
