#include "model/dsa_family/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "model/dsa_family/cpu_math.h"

namespace ic::dsa {

RouterRule RouterRule::of(const MlaMoeConfig& c) {
  return {c.n_routed_experts, c.n_experts_per_tok, c.n_group, c.topk_group, c.norm_topk_prob, c.routed_scaling_factor};
}

namespace {

// Indices of the `k` largest of v[0, n): value descending, index ascending.
std::vector<int32_t> best(const std::vector<double>& v, int64_t k) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

void route_token(const RouterRule& r, const double* logits, const float* bias, int32_t* ids, float* weights) {
  const int64_t E = r.n_experts, G = r.n_group, per = E / G;
  std::vector<double> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    score[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    choice[e] = score[e] + (bias ? bias[e] : 0.0f);
  }
  std::vector<double> group(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
    const std::vector<int32_t> top2 = best(members, 2);
    group[g] = members[top2[0]] + members[top2[1]];
  }
  std::vector<bool> kept(static_cast<size_t>(G), false);
  for (int32_t g : best(group, r.topk_group)) kept[g] = true;
  for (int64_t e = 0; e < E; ++e)
    if (!kept[e / per]) choice[e] = -std::numeric_limits<double>::infinity();
  const std::vector<int32_t> chosen = best(choice, r.top_k);
  double sum = 0.0;
  for (int32_t e : chosen) sum += score[e];
  for (int64_t i = 0; i < r.top_k; ++i) {
    ids[i] = chosen[i];
    double w = score[chosen[i]];
    if (r.norm_topk_prob) w /= sum + 1e-20;
    weights[i] = static_cast<float>(w * r.routed_scaling_factor);
  }
}

Routing route(const MlaMoeConfig& c, const MoeWeights& w, const Tensor& h) {
  const RouterRule rule = RouterRule::of(c);
  const int64_t n = h.dim(0), E = rule.n_experts, D = h.dim(1);
  Routing r{Tensor::empty({n, rule.top_k}, DType::I32), Tensor::empty({n, rule.top_k}, DType::F32)};
  std::vector<double> logits(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t e = 0; e < E; ++e) logits[e] = dot(h.data<float>() + t * D, w.router.data<float>() + e * D, D);
    route_token(rule, logits.data(), w.router_bias.data<float>(), r.ids.data<int32_t>() + t * rule.top_k,
                r.weights.data<float>() + t * rule.top_k);
  }
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
  const int64_t n = h.dim(0), D = h.dim(1), K = routing.ids.dim(1);
  Tensor out = w.shared.defined() ? mlp_forward(w.shared, h) : Tensor::zeros({n, D}, DType::F32);
  // Token by token and expert by expert: slow, and obviously the definition.
  std::vector<double> acc(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const Tensor x = h.slice_rows(t, t + 1);
    for (int64_t i = 0; i < K; ++i) {
      const int32_t e = routing.ids.data<int32_t>()[t * K + i];
      const Tensor y = mlp_forward(w.experts[static_cast<size_t>(e)], x);
      const double wt = routing.weights.data<float>()[t * K + i];
      for (int64_t d = 0; d < D; ++d) acc[d] += wt * y.data<float>()[d];
    }
    float* o = out.data<float>() + t * D;
    for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(o[d] + acc[d]);
  }
  return out;
}

}  // namespace ic::dsa
