#include "ops/swiglu.h"

#include "core/error.h"

namespace ic::ops {

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_tensor(gate, "swiglu gate", DType::F32, gate.device(), gate.rank());
  check_tensor(up, "swiglu up", DType::F32, gate.device(), gate.rank());
  check_tensor(out, "swiglu out", DType::F32, gate.device(), gate.rank());
  IC_CHECK(up.shape() == gate.shape() && out.shape() == gate.shape(),
           "swiglu: gate {} up {} out {} differ", gate.desc(), up.desc(), out.desc());
  const SwigluParams p{gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel()};
  if (gate.device() == Device::CPU) return cpu::swiglu(p);
#ifdef IC_WITH_CUDA
  cuda::swiglu(p);
#else
  fail_no_cuda("swiglu");
#endif
}

}  // namespace ic::ops
