#include "ops/gemm_bf16.h"

#include "core/error.h"

namespace ic::ops {

void gemm_bf16(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const Device dev = x.device();
  check_tensor(x, "gemm_bf16 x", DType::BF16, dev, 2);
  check_tensor(w, "gemm_bf16 w", DType::BF16, dev, 2);
  IC_CHECK(y.defined() && (y.dtype() == DType::F32 || y.dtype() == DType::BF16),
           "gemm_bf16: y must be F32 or BF16, got {}", y.defined() ? y.desc() : std::string("an undefined tensor"));
  check_tensor(y, "gemm_bf16 y", y.dtype(), dev, 2);
  IC_CHECK(x.dim(1) == w.dim(1) && x.dim(1) >= 1, "gemm_bf16: x {} and w {} need one inner size >= 1", x.desc(),
           w.desc());
  IC_CHECK(y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0), "gemm_bf16: y {} must be [{}, {}] for x {} and w {}",
           y.desc(), x.dim(0), w.dim(0), x.desc(), w.desc());
  GemmBf16Params p{x.data<uint16_t>(), w.data<uint16_t>(), y.raw(), x.dim(0), w.dim(0), x.dim(1), y.dtype()};
  p.accumulate = accumulate;
  gemm_bf16(p, dev);
}

void gemm_bf16(const GemmBf16Params& p, Device dev) {
  IC_CHECK(p.n >= 0 && p.out >= 0 && p.in >= 1 && p.batch >= 1, "gemm_bf16: n {}, out {}, in {}, batch {}", p.n,
           p.out, p.in, p.batch);
  IC_CHECK(p.batch == 1 || (p.stride_x >= 0 && p.stride_w >= 0 && p.stride_y >= p.n * p.out),
           "gemm_bf16: batch strides x {}, w {}, y {} (y's must hold n x out = {} and not overlap)", p.stride_x,
           p.stride_w, p.stride_y, p.n * p.out);
  if (dev == Device::CPU) return cpu::gemm_bf16_reference(p);
#ifdef IC_WITH_CUDA
  cuda::gemm_bf16(p);
#else
  fail_no_cuda("gemm_bf16");
#endif
}

}  // namespace ic::ops
