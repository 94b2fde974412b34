#pragma once
// The feed-forward blocks of the DSA family on the CPU reference path, as HF's DeepseekV32MoE /
// GlmMoeDsaMoE / Glm4MoeLiteMoE define them:
//   dense layers:  down(silu(gate x) * up x)
//   MoE layers:    sum_i weight_i * expert_{id_i}(x) + shared_experts(x)
// The router (DeepseekV32TopkRouter), for each token:
//   logits = x W_gate^T,  score = sigmoid(logits),  choice = score + e_score_correction_bias
//   the experts form n_group contiguous groups; a group's value is the sum of its two largest
//   choice scores; the topk_group best groups are kept, the others' experts masked (-inf)
//   ids = the num_experts_per_tok best choice scores among the kept experts
//   weights = score[ids] (without the bias), / (their sum + 1e-20) if norm_topk_prob,
//             then * routed_scaling_factor
// Ties (groups and experts) go to the lower index; ids come in that order (choice descending,
// index ascending). HF's torch.topk(sorted=False) fixes neither order nor ties: the chosen set is
// the same wherever HF's choice is unique.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/weights.h"

namespace ic::dsa {

struct RouterRule {
  int64_t n_experts = 0, top_k = 1, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  static RouterRule of(const MlaMoeConfig& c);
};

// One token: logits [n_experts] (double), bias [n_experts] (may be null) -> ids, weights [top_k].
void route_token(const RouterRule& r, const double* logits, const float* bias, int32_t* ids, float* weights);

struct Routing {
  Tensor ids;      // I32 [n, top_k]
  Tensor weights;  // F32 [n, top_k]
};

// h: F32 [n, hidden]. Router logits in double from the f32 inputs.
Routing route(const MlaMoeConfig& c, const MoeWeights& w, const Tensor& h);
// Dense SwiGLU MLP: F32 [n, hidden] -> F32 [n, hidden].
Tensor mlp_forward(const MlpWeights& w, const Tensor& h);
// Routed experts by `routing`, plus the shared experts.
Tensor moe_forward(const MoeWeights& w, const Routing& routing, const Tensor& h);

}  // namespace ic::dsa
