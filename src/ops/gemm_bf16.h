#pragma once
// bf16 GEMM for the DSA family's fast path: y[n, out] = x[n, in] @ W^T (+ y when accumulating),
// x and W bf16, f32 accumulation, y f32 or bf16. On CUDA it is one cuBLASLt matmul (its own op
// rather than a LinearWeight mode: the llama path's LinearWeight keeps its f32/quantised forms).
//
// Rounding: the bf16 products are exact in f32, so only the f32 sum rounds (gamma_in relative to
// sum |x_k w_k|), then y once to its type (bf16: 2^-8 relative). With accumulate (cuBLAS's
// beta = 1) the reference adds the old y before that last rounding; into a bf16 y, cuBLASLt's
// result may also be 2^-8 |x W^T| away (on the H200 at n 1, out 2048, in 2048 it gave an exact 0
// where the sum was -0.0036: consistent with x W^T rounded to bf16 before the old y is added).
//
// Cost: 2 n out in FLOPs; at least 2 (n in + out in) bytes read and n out * sizeof(y) written
// (twice that for accumulate).
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

struct GemmBf16Params {
  const uint16_t* x;  // [n, in] bf16 bits, rows contiguous
  const uint16_t* w;  // [out, in] bf16 bits (the HF nn.Linear layout)
  void* y;            // [n, out] of y_type; must not overlap x or w
  int64_t n;          // may be 0
  int64_t out;
  int64_t in;         // >= 1
  DType y_type;       // F32 or BF16
  bool accumulate = false;  // y += x @ W^T instead of y = x @ W^T
  // Strided batch: `batch` independent products, product b reading x + b * stride_x,
  // w + b * stride_w and writing y + b * stride_y (strides in elements; batch 1 ignores them).
  // The absorbed MLA's per-head products are one such call instead of one GEMM per head.
  int64_t batch = 1;
  int64_t stride_x = 0, stride_w = 0, stride_y = 0;
};

// x: BF16 [n, in]; w: BF16 [out, in]; y: F32 or BF16 [n, out]; all on one device.
void gemm_bf16(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate = false);
// The raw form (strided batches; pointers on `dev`): checks the sizes, then runs the CPU
// reference or cuBLASLt.
void gemm_bf16(const GemmBf16Params& p, Device dev);

namespace cpu {
// The plain reference: double sums, one rounding to y's type. The CPU path of the front.
void gemm_bf16_reference(const GemmBf16Params& p);
}  // namespace cpu
namespace cuda {
// cuBLASLt, CUBLAS_COMPUTE_32F, on the legacy default stream like every op (a strided batch is
// one call with the layouts' batch count and offsets). The algorithm is
// chosen by cuBLASLt's heuristic once per shape and alignment and then reused, so a shape gives
// the same bits run to run. All pointers are device memory.
void gemm_bf16(const GemmBf16Params& p);
}  // namespace cuda

}  // namespace ic::ops
