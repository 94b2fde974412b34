#pragma once
// Linear layer y = x @ W^T with W stored the way each device's kernels want it:
// on the CPU a PackedWeight (quantised codes, int8 activations, VNNI); on CUDA an F32 copy of
// the exactly dequantised weights driven by cuBLASLt.
#include "core/tensor.h"
#include "ops/qgemm.h"

namespace ic::ops {

class LinearWeight {
 public:
  LinearWeight() = default;
  // rows: n_out GGUF rows of n_in elements of `type` (host memory).
  static LinearWeight load(DType type, const void* rows, int64_t n_out, int64_t n_in, Device device);

  int64_t n_out() const { return n_out_; }
  int64_t n_in() const { return n_in_; }
  Device device() const { return device_; }
  int64_t bytes() const;
  const PackedWeight& packed() const { return packed_; }  // CPU only
  const Tensor& dense() const { return dense_; }          // CUDA only: F32 [n_out, n_in]
  // One row of the weights as the device computes with them (host floats, [n_in]).
  void dequantize_row(int64_t o, float* dst) const;

 private:
  Device device_ = Device::CPU;
  int64_t n_out_ = 0, n_in_ = 0;
  PackedWeight packed_;
  Tensor dense_;
};

// x: F32 [n_tok, n_in], y: F32 [n_tok, n_out], on the weight's device.
void linear(const LinearWeight& w, const Tensor& x, Tensor& y);

namespace cuda {
// y [n_tok, n_out] = x [n_tok, n_in] @ w^T with w F32 [n_out, n_in]; all device pointers.
void linear(const float* w, const float* x, float* y, int64_t n_tok, int64_t n_out, int64_t n_in);
}  // namespace cuda

}  // namespace ic::ops
