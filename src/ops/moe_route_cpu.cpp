#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "ops/moe_route.h"

namespace ic::ops::cpu {

namespace {

double load(const void* base, DType type, int64_t i) {
  return type == DType::F32 ? static_cast<double>(static_cast<const float*>(base)[i])
                            : static_cast<double>(bf16_to_f32(static_cast<const uint16_t*>(base)[i]));
}

// Index of the best candidate (largest value, lowest index among equals) with allowed[i] set, or -1.
int64_t best_of(const std::vector<double>& v, const std::vector<char>& allowed) {
  int64_t best = -1;
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i)
    if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;  // strict >: an equal later one loses
  return best;
}

}  // namespace

void moe_route_reference(const MoeRouteParams& p) {
  const MoeRouterConfig& c = p.cfg;
  const int64_t E = p.n_experts, gsize = E / c.n_group;
  std::vector<double> score(E), choice(E), group_score(c.n_group);
  std::vector<char> allowed(E), group_free(c.n_group);
  for (int64_t t = 0; t < p.n_tok; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      double s = 0.0;
      for (int64_t k = 0; k < p.dim; ++k) s += load(p.x, p.type, t * p.dim + k) * load(p.w_gate, p.type, e * p.dim + k);
      p.logits[t * E + e] = static_cast<float>(s);
      score[e] = 1.0 / (1.0 + std::exp(-s));
      choice[e] = score[e] + (p.bias ? p.bias[e] : 0.0);
    }
    // Keep the topk_group best groups (all of them when none is masked).
    std::fill(allowed.begin(), allowed.end(), 0);
    for (int64_t g = 0; g < c.n_group; ++g) {
      double top1 = -INFINITY, top2 = -INFINITY;
      for (int64_t e = g * gsize; e < (g + 1) * gsize; ++e) {
        if (choice[e] > top1) {
          top2 = top1;
          top1 = choice[e];
        } else if (choice[e] > top2) {
          top2 = choice[e];
        }
      }
      group_score[g] = gsize >= 2 ? top1 + top2 : top1;
      group_free[g] = 1;
    }
    for (int64_t i = 0; i < c.topk_group; ++i) {
      const int64_t g = best_of(group_score, group_free);
      group_free[g] = 0;
      for (int64_t e = g * gsize; e < (g + 1) * gsize; ++e) allowed[e] = 1;
    }
    // Then top_k experts among the kept groups, best first.
    double sum = 0.0;
    for (int64_t i = 0; i < c.top_k; ++i) {
      const int64_t e = best_of(choice, allowed);
      allowed[e] = 0;
      p.ids[t * c.top_k + i] = static_cast<int32_t>(e);
      sum += score[e];
    }
    const double denom = c.norm_topk_prob ? sum + 1e-20 : 1.0;
    for (int64_t i = 0; i < c.top_k; ++i)
      p.weights[t * c.top_k + i] =
          static_cast<float>(score[p.ids[t * c.top_k + i]] / denom * static_cast<double>(c.routed_scaling_factor));
  }
}

}  // namespace ic::ops::cpu
