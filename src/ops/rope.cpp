#include "ops/rope.h"

#include "core/error.h"

namespace ic::ops {

RopeStyle rope_style_from_string(std::string_view s) {
  if (s == "adjacent" || s == "interleaved" || s == "gptj") return RopeStyle::kAdjacent;
  if (s == "half" || s == "neox") return RopeStyle::kHalf;
  fail("unknown RoPE style '{}' (supported: adjacent/interleaved, half/neox)", s);
}

std::string_view rope_style_name(RopeStyle s) { return s == RopeStyle::kAdjacent ? "adjacent" : "half"; }

void rope(Tensor& x, const Tensor& pos, int64_t rot_dim, float theta_base, RopeStyle style) {
  check_tensor(x, "rope x", DType::F32, x.device(), 3);
  check_tensor(pos, "rope pos", DType::I32, x.device(), 1);
  IC_CHECK(pos.dim(0) == x.dim(0), "rope: {} positions for {} tokens", pos.dim(0), x.dim(0));
  IC_CHECK(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= x.dim(2),
           "rope: rot_dim {} must be even and within head_dim {}", rot_dim, x.dim(2));
  const RopeParams p{x.data<float>(), pos.data<int32_t>(), x.dim(0), x.dim(1), x.dim(2),
                     x.dim(1) * x.dim(2), rot_dim, theta_base, style};
  if (x.device() == Device::CPU) return cpu::rope(p);
#ifdef IC_WITH_CUDA
  cuda::rope(p);
#else
  fail_no_cuda("rope");
#endif
}

}  // namespace ic::ops
