#include "ops/token_logprob.h"

#include "core/error.h"

namespace ic::ops {

void token_logprob(const Tensor& logits, const Tensor& target, Tensor& out) {
  const Device dev = logits.device();
  check_tensor(logits, "token_logprob logits", DType::F32, dev, 2);
  check_tensor(target, "token_logprob target", DType::I32, target.device(), 1);
  check_tensor(out, "token_logprob out", DType::F32, dev, 1);
  const int64_t n = logits.dim(0), V = logits.dim(1);
  IC_CHECK(target.dim(0) == n && out.dim(0) == n, "token_logprob: logits {} target {} out {} do not match",
           logits.desc(), target.desc(), out.desc());
  IC_CHECK(V > 0, "token_logprob: empty vocabulary");
  // Targets are checked on the host (a kernel cannot report a bad index as a clear error).
  Tensor host = target.device() == Device::CPU ? target : target.to(Device::CPU);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = host.data<int32_t>()[i];
    IC_CHECK(0 <= t && t < V, "token_logprob: target {} of row {} outside the vocabulary [0, {})", t, i, V);
  }
  Tensor dev_target = target.device() == dev ? target : host.to(dev);
  const TokenLogprobParams p{logits.data<float>(), dev_target.data<int32_t>(), out.data<float>(), n, V};
  if (dev == Device::CPU) return cpu::token_logprob(p);
#ifdef IC_WITH_CUDA
  cuda::token_logprob(p);
#else
  fail_no_cuda("token_logprob");
#endif
}

}  // namespace ic::ops
