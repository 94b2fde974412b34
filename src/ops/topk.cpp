#include "ops/topk.h"

#include <limits>

#include "core/error.h"

namespace ic::ops {

void topk(const Tensor& scores, int64_t q_pos0, Tensor& out) {
  const Device dev = scores.device();
  check_tensor(scores, "topk scores", DType::F32, dev, 2);
  check_tensor(out, "topk out", DType::I32, dev, 2);
  IC_CHECK(out.dim(0) == scores.dim(0), "topk: out {} has a row per query of scores {}", out.desc(),
           scores.desc());
  IC_CHECK(out.dim(1) >= 1, "topk: k must be at least 1, out is {}", out.desc());
  IC_CHECK(q_pos0 >= 0 && q_pos0 + scores.dim(0) <= scores.dim(1),
           "topk: queries at positions [{}, {}) need more than the {} score columns", q_pos0,
           q_pos0 + scores.dim(0), scores.dim(1));
  IC_CHECK(scores.dim(1) <= std::numeric_limits<int32_t>::max(),
           "topk: {} keys do not fit int32 indices", scores.dim(1));
  const TopkParams p{scores.data<float>(), out.data<int32_t>(), scores.dim(0), scores.dim(1), q_pos0,
                     out.dim(1)};
  if (dev == Device::CPU) return cpu::topk(p);
#ifdef IC_WITH_CUDA
  // No CUDA kernel yet (the DSA kernels are a later issue); the CUDA build must still link.
  fail("topk: no CUDA kernel yet; the DSA operations run on the CPU only for now");
#else
  fail_no_cuda("topk");
#endif
}

}  // namespace ic::ops
