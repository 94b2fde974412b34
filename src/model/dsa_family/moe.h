#pragma once
// The feed-forward blocks of the DSA family on the CPU reference path, as HF's DeepseekV32MoE /
// GlmMoeDsaMoE / Glm4MoeLiteMoE define them:
//   dense layers:  down(silu(gate x) * up x)
//   MoE layers:    sum_i weight_i * expert_{id_i}(x) + shared_experts(x)
// The router (DeepseekV32TopkRouter) is ops::moe_route (ops/moe_route.h states it: sigmoid
// scores, e_score_correction_bias for the choice only, group-limited top-k, weights from the
// unbiased scores, norm_topk_prob, routed_scaling_factor; ties to the lower index), whose CPU path
// is its double reference; the GPU path will run the same op.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/weights.h"

namespace ic::dsa {

struct Routing {
  Tensor ids;      // I32 [n, top_k]
  Tensor weights;  // F32 [n, top_k]
};

// h: F32 [n, hidden]; ids in the op's order (choice score descending, index ascending).
Routing route(const MlaMoeConfig& c, const MoeWeights& w, const Tensor& h);
// Dense SwiGLU MLP: F32 [n, hidden] -> F32 [n, hidden].
Tensor mlp_forward(const MlpWeights& w, const Tensor& h);
// Routed experts by `routing`, plus the shared experts.
Tensor moe_forward(const MoeWeights& w, const Routing& routing, const Tensor& h);
// One rank's part of it (model/dsa_family/shard.h): `shared` (may be empty) plus the routed
// choices whose expert is in [e0, e1), with experts[e] the rank's weights of expert e; the sum of
// every rank's part is moe_forward. moe_forward is this with every expert and the whole shared one.
Tensor moe_forward_part(const std::vector<MlpWeights>& experts, int64_t e0, int64_t e1, const MlpWeights& shared,
                        const Routing& routing, const Tensor& h);

}  // namespace ic::dsa
