// The MoE router on the GPU: the logits by one cuBLAS GEMM, then one warp per token selects.
// The warp keeps the token's choice scores in shared memory and picks by repeated warp-wide
// argmax over 64-bit keys (order key of the value, then the complement of the index), so the
// winner is the largest value and, among equals, the lowest index: the CPU reference's order.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "core/cuda_check.h"
#include "ops/gemm_bf16.h"
#include "ops/linear.h"
#include "ops/moe_route.h"

namespace ic::ops::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;

// Monotone float -> uint32 (ops/topk.h's order_key, on the device): -0 and +0 tie.
__device__ uint32_t order_key(float x) {
  uint32_t u = __float_as_uint(x);
  u = u == 0x80000000u ? 0u : u;
  return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
}

// Never 0 for a real candidate (the index half is at least 1), so 0 means "none".
__device__ uint64_t pick_key(float v, int i) {
  return (static_cast<uint64_t>(order_key(v)) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

__device__ uint64_t warp_max(uint64_t k) {
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t other = __shfl_xor_sync(0xffffffffu, k, o);
    k = other > k ? other : k;
  }
  return k;
}

// The best allowed entry of v[0, n), lowest index among equals; every lane gets it.
__device__ int warp_best(const float* v, const uint8_t* allowed, int n, int lane) {
  uint64_t best = 0;
  for (int i = lane; i < n; i += 32)
    if (allowed[i]) {
      const uint64_t k = pick_key(v[i], i);
      best = k > best ? k : best;
    }
  best = warp_max(best);
  return static_cast<int>(0xffffffffu - static_cast<uint32_t>(best & 0xffffffffu));
}

struct RouteArgs {
  const float* logits;  // [n_tok, E]
  const float* bias;    // [E] or null
  int32_t* ids;         // [n_tok, top_k]
  float* weights;       // [n_tok, top_k]
  int n_tok, E, n_group, topk_group, top_k;
  bool norm;
  float scale;
};

// Shared memory per warp: choice[E] f32, group_score[n_group] f32, allowed[E] u8, group_free[n_group] u8.
__host__ __device__ size_t warp_smem_bytes(int E, int n_group) {
  return ((static_cast<size_t>(E + n_group) * 4 + E + n_group + 15) / 16) * 16;
}

__global__ void route_select_kernel(RouteArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x * kWarpsPerBlock + warp;
  if (t >= a.n_tok) return;  // whole warps leave together: no block-wide barrier below
  unsigned char* base = smem + warp * warp_smem_bytes(a.E, a.n_group);
  float* choice = reinterpret_cast<float*>(base);
  float* group_score = choice + a.E;
  uint8_t* allowed = reinterpret_cast<uint8_t*>(group_score + a.n_group);
  uint8_t* group_free = allowed + a.E;
  const float* logit = a.logits + static_cast<int64_t>(t) * a.E;

  for (int e = lane; e < a.E; e += 32) {
    choice[e] = 1.0f / (1.0f + expf(-logit[e])) + (a.bias ? a.bias[e] : 0.0f);
    allowed[e] = a.topk_group == a.n_group;  // nothing masked: every expert is a candidate
  }
  __syncwarp();
  if (a.topk_group < a.n_group) {
    const int gsize = a.E / a.n_group;
    for (int g = lane; g < a.n_group; g += 32) {
      float top1 = -INFINITY, top2 = -INFINITY;
      for (int e = g * gsize; e < (g + 1) * gsize; ++e) {
        const float c = choice[e];
        if (c > top1) {
          top2 = top1;
          top1 = c;
        } else if (c > top2) {
          top2 = c;
        }
      }
      group_score[g] = top1 + top2;
      group_free[g] = 1;
    }
    __syncwarp();
    for (int i = 0; i < a.topk_group; ++i) {
      const int g = warp_best(group_score, group_free, a.n_group, lane);
      __syncwarp();
      if (lane == 0) group_free[g] = 0;
      for (int e = g * gsize + lane; e < (g + 1) * gsize; e += 32) allowed[e] = 1;
      __syncwarp();
    }
  }
  int32_t* ids = a.ids + static_cast<int64_t>(t) * a.top_k;
  float* w = a.weights + static_cast<int64_t>(t) * a.top_k;
  float sum = 0.0f;  // lane 0's, in slot order
  for (int i = 0; i < a.top_k; ++i) {
    const int e = warp_best(choice, allowed, a.E, lane);
    __syncwarp();
    if (lane == 0) {
      allowed[e] = 0;
      ids[i] = e;
      const float s = 1.0f / (1.0f + expf(-logit[e]));
      w[i] = s;
      sum += s;
    }
    __syncwarp();
  }
  const float denom = a.norm ? __shfl_sync(0xffffffffu, sum, 0) + 1e-20f : 1.0f;
  for (int i = lane; i < a.top_k; i += 32) w[i] = w[i] / denom * a.scale;
}

}  // namespace

void moe_route(const MoeRouteParams& p) {
  if (p.n_tok == 0) return;
  IC_CHECK(p.n_experts <= kMoeRouteMaxExperts, "moe_route: {} experts exceed the CUDA kernel's {}", p.n_experts,
           kMoeRouteMaxExperts);
  IC_CHECK(p.n_tok <= INT_MAX / 2, "moe_route: {} tokens exceed the CUDA grid", p.n_tok);
  if (p.type == DType::BF16) {
    gemm_bf16({static_cast<const uint16_t*>(p.x), static_cast<const uint16_t*>(p.w_gate), p.logits, p.n_tok,
               p.n_experts, p.dim, DType::F32});
  } else {
    IC_CHECK(p.type == DType::F32, "moe_route: inputs must be F32 or BF16, got {}", dtype_name(p.type));
    linear(static_cast<const float*>(p.w_gate), static_cast<const float*>(p.x), p.logits, p.n_tok, p.n_experts,
           p.dim);
  }
  const RouteArgs a{p.logits,
                    p.bias,
                    p.ids,
                    p.weights,
                    static_cast<int>(p.n_tok),
                    static_cast<int>(p.n_experts),
                    static_cast<int>(p.cfg.n_group),
                    static_cast<int>(p.cfg.topk_group),
                    static_cast<int>(p.cfg.top_k),
                    p.cfg.norm_topk_prob,
                    p.cfg.routed_scaling_factor};
  const size_t smem = kWarpsPerBlock * warp_smem_bytes(a.E, a.n_group);
  const unsigned blocks = static_cast<unsigned>((p.n_tok + kWarpsPerBlock - 1) / kWarpsPerBlock);
  route_select_kernel<<<blocks, kWarpsPerBlock * 32, smem>>>(a);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
