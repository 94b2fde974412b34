#include "ops/rms_norm.h"

#include "core/error.h"

namespace ic::ops {

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  check_tensor(x, "rms_norm x", DType::F32, x.device(), 2);
  check_tensor(weight, "rms_norm weight", DType::F32, x.device(), 1);
  check_tensor(out, "rms_norm out", DType::F32, x.device(), 2);
  IC_CHECK(weight.dim(0) == x.dim(1) && out.shape() == x.shape(),
           "rms_norm: x {} weight {} out {} do not match", x.desc(), weight.desc(), out.desc());
  const RmsNormParams p{x.data<float>(), weight.data<float>(), out.data<float>(), x.dim(0), x.dim(1), eps};
  if (x.device() == Device::CPU) return cpu::rms_norm(p);
#ifdef IC_WITH_CUDA
  cuda::rms_norm(p);
#else
  fail_no_cuda("rms_norm");
#endif
}

}  // namespace ic::ops
