#include "model/dsa_family/moe.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/dsa_family/cpu_math.h"
#include "ops/moe_route.h"

namespace ic::dsa {

Routing route(const MlaMoeConfig& c, const MoeWeights& w, const Tensor& h) {
  ops::MoeRouterConfig rc;
  rc.top_k = c.n_experts_per_tok;
  rc.n_group = c.n_group;
  rc.topk_group = c.topk_group;
  rc.norm_topk_prob = c.norm_topk_prob;
  rc.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  const int64_t n = h.dim(0);
  Routing r{Tensor::empty({n, rc.top_k}, DType::I32), Tensor::empty({n, rc.top_k}, DType::F32)};
  ops::moe_route(h, w.router, w.router_bias, rc, r.ids, r.weights);
  return r;
}

Tensor mlp_forward(const MlpWeights& w, const Tensor& h) {
  Tensor g = linear(h, w.gate);
  const Tensor u = linear(h, w.up);
  for (int64_t i = 0; i < g.numel(); ++i)
    g.data<float>()[i] = static_cast<float>(silu(g.data<float>()[i]) * u.data<float>()[i]);
  return linear(g, w.down);
}

Tensor moe_forward(const MoeWeights& w, const Routing& routing, const Tensor& h) {
  return moe_forward_part(w.experts, 0, static_cast<int64_t>(w.experts.size()), w.shared, routing, h);
}

Tensor moe_forward_part(const std::vector<MlpWeights>& experts, int64_t e0, int64_t e1, const MlpWeights& shared,
                        const Routing& routing, const Tensor& h) {
  const int64_t n = h.dim(0), D = h.dim(1), K = routing.ids.dim(1);
  Tensor out = shared.defined() ? mlp_forward(shared, h) : Tensor::zeros({n, D}, DType::F32);
  // Token by token and expert by expert: slow, and obviously the definition.
  std::vector<double> acc(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const Tensor x = h.slice_rows(t, t + 1);
    for (int64_t i = 0; i < K; ++i) {
      const int32_t e = routing.ids.data<int32_t>()[t * K + i];
      if (e < e0 || e >= e1) continue;  // another rank's expert
      const Tensor y = mlp_forward(experts[static_cast<size_t>(e)], x);
      const double wt = routing.weights.data<float>()[t * K + i];
      for (int64_t d = 0; d < D; ++d) acc[d] += wt * y.data<float>()[d];
    }
    float* o = out.data<float>() + t * D;
    for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(o[d] + acc[d]);
  }
  return out;
}

}  // namespace ic::dsa
