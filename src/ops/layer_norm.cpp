#include "ops/layer_norm.h"

#include "core/error.h"

namespace ic::ops {

void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, Tensor& out) {
  check_tensor(x, "layer_norm x", DType::F32, x.device(), 2);
  check_tensor(weight, "layer_norm weight", DType::F32, x.device(), 1);
  check_tensor(bias, "layer_norm bias", DType::F32, x.device(), 1);
  check_tensor(out, "layer_norm out", DType::F32, x.device(), 2);
  IC_CHECK(weight.dim(0) == x.dim(1) && bias.dim(0) == x.dim(1) && out.shape() == x.shape(),
           "layer_norm: x {} weight {} bias {} out {} do not match", x.desc(), weight.desc(), bias.desc(),
           out.desc());
  const LayerNormParams p{x.data<float>(), weight.data<float>(), bias.data<float>(), out.data<float>(),
                          x.dim(0), x.dim(1), eps};
  if (x.device() == Device::CPU) return cpu::layer_norm(p);
#ifdef IC_WITH_CUDA
  cuda::layer_norm(p);
#else
  fail_no_cuda("layer_norm");
#endif
}

}  // namespace ic::ops
