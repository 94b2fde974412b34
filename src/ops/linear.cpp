#include "ops/linear.h"

#include <vector>

#include "core/error.h"
#include "io/dequant.h"

namespace ic::ops {

LinearWeight LinearWeight::load(DType type, const void* rows, int64_t n_out, int64_t n_in, Device device) {
  LinearWeight w;
  w.device_ = device;
  w.n_out_ = n_out;
  w.n_in_ = n_in;
  if (device == Device::CPU) {
    w.packed_ = PackedWeight::pack(type, rows, n_out, n_in);
    return w;
  }
  // The GPU computes with the exact dequantised values, so its results differ from the CPU
  // reference only by summation order.
  Tensor host = Tensor::empty({n_out, n_in}, DType::F32);
  const int64_t row_bytes = dtype_row_bytes(type, n_in);
  for (int64_t o = 0; o < n_out; ++o)
    ic::dequantize_row(type, static_cast<const char*>(rows) + o * row_bytes, host.data<float>() + o * n_in, n_in);
  w.dense_ = host.to(device);
  return w;
}

int64_t LinearWeight::bytes() const { return device_ == Device::CPU ? packed_.bytes() : dense_.nbytes(); }

void LinearWeight::dequantize_row(int64_t o, float* dst) const {
  IC_CHECK(o >= 0 && o < n_out_, "row {} out of range for a {}x{} weight", o, n_out_, n_in_);
  if (device_ == Device::CPU) return packed_.dequantize_row(o, dst);
  Tensor row = dense_.slice_rows(o, o + 1).to(Device::CPU);
  std::copy(row.data<float>(), row.data<float>() + n_in_, dst);
}

void linear(const LinearWeight& w, const Tensor& x, Tensor& y) {
  check_tensor(x, "linear x", DType::F32, w.device(), 2);
  check_tensor(y, "linear y", DType::F32, w.device(), 2);
  IC_CHECK(x.dim(1) == w.n_in() && y.dim(1) == w.n_out() && y.dim(0) == x.dim(0),
           "linear: x {} and y {} do not fit a {}x{} weight", x.desc(), y.desc(), w.n_out(), w.n_in());
  if (w.device() == Device::CPU) return qgemm(w.packed(), x.data<float>(), x.dim(0), y.data<float>());
#ifdef IC_WITH_CUDA
  cuda::linear(w.dense().data<float>(), x.data<float>(), y.data<float>(), x.dim(0), w.n_out(), w.n_in());
#else
  fail_no_cuda("linear");
#endif
}

}  // namespace ic::ops
