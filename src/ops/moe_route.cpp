#include "ops/moe_route.h"

#include "core/error.h"

namespace ic::ops {

void check_router_config(const MoeRouterConfig& c, int64_t n_experts) {
  IC_CHECK(n_experts >= 1, "moe router: needs at least one expert, got {}", n_experts);
  IC_CHECK(c.n_group >= 1 && n_experts % c.n_group == 0, "moe router: n_group {} must divide n_experts {}",
           c.n_group, n_experts);
  IC_CHECK(c.topk_group >= 1 && c.topk_group <= c.n_group, "moe router: topk_group {} must be in [1, n_group {}]",
           c.topk_group, c.n_group);
  const int64_t group_size = n_experts / c.n_group;
  // A group's score is the sum of its top two (HF: topk(2) per group), which needs two members
  // wherever groups are actually masked.
  IC_CHECK(c.topk_group == c.n_group || group_size >= 2,
           "moe router: groups of {} expert(s) have no top-2 score (n_experts {}, n_group {})", group_size,
           n_experts, c.n_group);
  IC_CHECK(c.top_k >= 1 && c.top_k <= c.topk_group * group_size,
           "moe router: top_k {} must be in [1, {}] (topk_group {} x {} experts per group)", c.top_k,
           c.topk_group * group_size, c.topk_group, group_size);
}

void moe_route(const Tensor& x, const Tensor& w_gate, const Tensor& bias, const MoeRouterConfig& cfg, Tensor& ids,
               Tensor& weights, Tensor* logits) {
  const Device dev = x.device();
  IC_CHECK(x.defined() && (x.dtype() == DType::F32 || x.dtype() == DType::BF16),
           "moe_route: x must be F32 or BF16, got {}", x.defined() ? x.desc() : std::string("an undefined tensor"));
  check_tensor(x, "moe_route x", x.dtype(), dev, 2);
  check_tensor(w_gate, "moe_route w_gate", x.dtype(), dev, 2);
  IC_CHECK(w_gate.dim(1) == x.dim(1), "moe_route: w_gate {} must have x's {} columns (x {})", w_gate.desc(),
           x.dim(1), x.desc());
  const int64_t n_tok = x.dim(0), n_experts = w_gate.dim(0);
  check_router_config(cfg, n_experts);
  if (bias.defined()) {
    check_tensor(bias, "moe_route bias", DType::F32, dev, 1);
    IC_CHECK(bias.dim(0) == n_experts, "moe_route: bias {} needs one entry per expert ({})", bias.desc(),
             n_experts);
  }
  check_tensor(ids, "moe_route ids", DType::I32, dev, 2);
  check_tensor(weights, "moe_route weights", DType::F32, dev, 2);
  IC_CHECK(ids.dim(0) == n_tok && ids.dim(1) == cfg.top_k && weights.shape() == ids.shape(),
           "moe_route: ids {} and weights {} must be [{}, {}]", ids.desc(), weights.desc(), n_tok, cfg.top_k);
  Tensor scratch;
  if (logits && logits->defined()) {
    check_tensor(*logits, "moe_route logits", DType::F32, dev, 2);
    IC_CHECK(logits->dim(0) == n_tok && logits->dim(1) == n_experts, "moe_route: logits {} must be [{}, {}]",
             logits->desc(), n_tok, n_experts);
  } else {
    scratch = Tensor::empty({n_tok, n_experts}, DType::F32, dev);
  }
  const MoeRouteParams p{x.raw(),
                         w_gate.raw(),
                         x.dtype(),
                         bias.defined() ? bias.data<float>() : nullptr,
                         (logits && logits->defined() ? *logits : scratch).data<float>(),
                         ids.data<int32_t>(),
                         weights.data<float>(),
                         n_tok,
                         x.dim(1),
                         n_experts,
                         cfg};
  if (dev == Device::CPU) return cpu::moe_route_reference(p);
#ifdef IC_WITH_CUDA
  cuda::moe_route(p);
#else
  fail_no_cuda("moe_route");
#endif
}

}  // namespace ic::ops
