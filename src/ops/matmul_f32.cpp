#include "ops/matmul_f32.h"

#include "core/error.h"
#include "ops/linear.h"

namespace ic::ops {

void matmul_f32(const Tensor& x, const Tensor& w, Tensor& y) {
  const Device dev = x.device();
  check_tensor(x, "matmul_f32 x", DType::F32, dev, 2);
  check_tensor(w, "matmul_f32 w", DType::F32, dev, 2);
  check_tensor(y, "matmul_f32 y", DType::F32, dev, 2);
  IC_CHECK(x.dim(1) == w.dim(1) && y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0),
           "matmul_f32: x {} w {} y {} do not fit", x.desc(), w.desc(), y.desc());
  const MatmulF32Params p{x.data<float>(), w.data<float>(), y.data<float>(), x.dim(0), x.dim(1), w.dim(0)};
  if (dev == Device::CPU) return cpu::matmul_f32(p);
#ifdef IC_WITH_CUDA
  cuda::linear(p.w, p.x, p.y, p.n, p.n_out, p.n_in);  // cuBLAS f32: the same operation
#else
  fail_no_cuda("matmul_f32");
#endif
}

}  // namespace ic::ops
