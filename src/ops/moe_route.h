#pragma once
// The MoE router of DeepSeek-V3/V3.2, GLM-MoE-DSA and GLM-4.7-Flash (HF transformers'
// DeepseekV3TopkRouter, Glm4MoeLiteTopkRouter), for every token t:
//   logits[e]  = x[t] . W_gate[e]                       (f32 accumulation on the GPU)
//   score[e]   = sigmoid(logits[e])
//   choice[e]  = score[e] + bias[e]                     (e_score_correction_bias)
//   groups: the n_experts experts in n_group equal, contiguous groups; a group's score is the sum
//           of its two largest choice scores; the topk_group best groups are kept and the others'
//           experts can never be chosen
//   ids        = the top_k experts of the kept groups by choice score
//   weights[i] = score[ids[i]] (unbiased), divided by their sum + 1e-20 if norm_topk_prob, then
//                times routed_scaling_factor
// Ties go to the lower index (groups and experts alike), and ids come in that order: choice score
// descending, index ascending. HF's topk(sorted=False) leaves order and ties unspecified; the set
// is the same wherever HF's is unique.
//
// Masked experts: current HF code (glm4_moe_lite, 5.x) masks with -inf, as here; older
// deepseek_v3 code masked with 0.0, which differs only if a kept expert's choice score is below 0
// (a bias below -score), where 0.0 would let a masked expert in.
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

struct MoeRouterConfig {
  int64_t top_k = 1;              // num_experts_per_tok, 1 <= top_k <= topk_group * group size
  int64_t n_group = 1;            // divides n_experts
  int64_t topk_group = 1;         // 1 <= topk_group <= n_group
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

struct MoeRouteParams {
  const void* x;       // [n_tok, dim] of `type`
  const void* w_gate;  // [n_experts, dim] of `type`
  DType type;          // F32 or BF16, both inputs alike (HF computes in f32 from either)
  const float* bias;   // [n_experts] e_score_correction_bias; null = zeros
  float* logits;       // [n_tok, n_experts] router logits, written (the GPU's workspace too)
  int32_t* ids;        // [n_tok, top_k] expert ids
  float* weights;      // [n_tok, top_k]
  int64_t n_tok;       // may be 0
  int64_t dim;
  int64_t n_experts;   // on CUDA at most cuda::kMoeRouteMaxExperts
  MoeRouterConfig cfg;
};

// x: F32 or BF16 [n_tok, dim]; w_gate: [n_experts, dim] of x's type; bias: F32 [n_experts] or an
// undefined Tensor (zeros); ids: I32 [n_tok, top_k]; weights: F32 [n_tok, top_k]; logits, when
// given: F32 [n_tok, n_experts] (else a temporary is allocated).
void moe_route(const Tensor& x, const Tensor& w_gate, const Tensor& bias, const MoeRouterConfig& cfg, Tensor& ids,
               Tensor& weights, Tensor* logits = nullptr);

// Throws ic::Error naming the first rule cfg breaks for n_experts experts.
void check_router_config(const MoeRouterConfig& cfg, int64_t n_experts);

namespace cpu {
// The plain reference, in double from the inputs on: logits, sigmoid, groups, selection and
// weights. The CPU path of the front. `logits` receives the double logits rounded to f32.
void moe_route_reference(const MoeRouteParams& p);
}  // namespace cpu
namespace cuda {
constexpr int64_t kMoeRouteMaxExperts = 1024;
// The logits by one cuBLAS GEMM (ops/gemm_bf16 for bf16, ops/linear for f32), then one warp per
// token selects in f32 with the same rules and tie order. Device pointers.
void moe_route(const MoeRouteParams& p);
}  // namespace cuda

}  // namespace ic::ops
