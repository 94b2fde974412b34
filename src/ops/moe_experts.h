#pragma once
// The routed experts of an MoE layer, combined (HF DeepseekV3MoE.moe / Glm4MoeLiteExperts):
//   out[t] = sum_{s < top_k} weights[t, s] * down_e(silu(gate_e(x[t])) * up_e(x[t])),  e = ids[t, s]
// with SwiGLU experts (silu(g) = g / (1 + exp(-g))). The shared expert and the router are not
// part of it (ops/moe_route.h gives ids and weights; a shared expert is a dense MLP beside it).
//
// Weights, bf16, one contiguous block per expert (HF transformers 5's fused expert layout):
//   w_gate_up [n_experts, 2 * inter, dim]: rows [0, inter) are gate_proj, [inter, 2 inter) up_proj
//   w_down    [n_experts, dim, inter]
// Checkpoints with separate gate_proj / up_proj per expert are stacked into this at load.
//
// Types: x bf16 (the fast path's activations), out f32 or bf16; ids i32, weights f32.
// On the GPU (moe_experts_cuda.cu) the token-expert pairs are sorted by expert, each expert's rows
// go through two grouped bf16 GEMMs with f32 accumulation, and each token's top_k expert outputs
// are summed in f32 in slot order (s = 0, 1, ...), so the result is the same bits run to run.
// Intermediate roundings on the GPU, each 2^-8 relative: gate and up (the first GEMM writes bf16),
// the SwiGLU product (the second GEMM reads bf16), each expert's down output; then out's type.
// The reference rounds nothing before out.
//
// An expert id outside [0, n_experts) is an ic::Error on both devices (the GPU counts them in the
// same pass that counts the experts' tokens, which the host reads anyway), except in the Gemv
// mode below, which has no such pass.
//
// Cost: 6 dim inter FLOPs per (token, slot) pair; bytes: 6 dim inter of weights per expert that
// any token picks, plus the activations (x, out, and on the GPU the permuted intermediates).
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

// How the CUDA path runs the experts' GEMMs (one dispatch point, cuda::moe_experts): Grouped is
// one cublasGemmGroupedBatchedEx per projection (the per-expert loop where cuBLAS answers
// NOT_SUPPORTED for the shapes); PerExpert one cublasGemmEx per expert that has tokens. Auto takes
// the per-expert loop from 512 rows per expert with tokens on, the grouped call below: on the H200
// at the 30B shape (bench/RESULTS.md, 2026-12-03) the grouped call was faster at 4 and 256 rows
// per expert (401 vs 1429 us, 1280 vs 1551 us) and slower at 1024 (4712 vs 2681 us).
//
// Gemv (never chosen by Auto; a caller opts in) is for a few pairs, as in decode: two kernels in
// which each pair's warps read its expert's rows once (matrix-vector products, the weight-read
// bound), then the combine; no sort, no host sync, so the op can sit inside a CUDA graph. Its
// roundings are the GEMM path's; the order of the f32 sums inside a dot product differs, so
// results agree with the GEMM modes to the bf16 rounding of gate, up and down outputs, not in
// bits. It cannot refuse a bad id without waiting for the device: a pair whose id is outside
// [0, n_experts) gives NaN outputs for its token instead of an ic::Error, so only callers whose
// ids are in range by construction (ops/moe_route's) take it. Needs dim and inter multiples of 8
// and 16-byte aligned x and weights (an ic::Error otherwise).
enum class MoeGemm : uint8_t { Auto, Grouped, PerExpert, Gemv };
constexpr int64_t kMoePerExpertRows = 512;
// Pairs (tokens x top_k) up to which the DSA family's GPU forward takes Gemv: below about 8 rows
// per expert a GEMM's tiles are mostly padding and the weights are read once either way.
constexpr int64_t kMoeGemvPairs = 32;

struct MoeExpertsParams {
  const uint16_t* x;          // [n_tok, dim] bf16 bits
  const int32_t* ids;         // [n_tok, top_k] expert per slot, in [0, n_experts); repeats allowed
  const float* weights;       // [n_tok, top_k]
  const uint16_t* w_gate_up;  // [n_experts, 2 * inter, dim] bf16 bits, gate rows first
  const uint16_t* w_down;     // [n_experts, dim, inter] bf16 bits
  void* out;                  // [n_tok, dim] of out_type; overwritten
  DType out_type;             // F32 or BF16
  int64_t n_tok;              // may be 0
  int64_t top_k;
  int64_t dim;
  int64_t inter;              // moe_intermediate_size
  int64_t n_experts;
  void* workspace = nullptr;  // CUDA: moe_experts_workspace_bytes(...) bytes of device memory
                              // (null: the call allocates its own); unused on the CPU
  MoeGemm gemm = MoeGemm::Auto;
};

// x: BF16 [n_tok, dim]; ids: I32 [n_tok, top_k]; weights: F32 [n_tok, top_k];
// w_gate_up: BF16 [n_experts, 2 * inter, dim]; w_down: BF16 [n_experts, dim, inter];
// out: F32 or BF16 [n_tok, dim]; workspace (CUDA only, may be null or undefined): any dtype, at
// least cuda::moe_experts_workspace_bytes bytes.
void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const Tensor& w_gate_up,
                 const Tensor& w_down, Tensor& out, const Tensor* workspace = nullptr,
                 MoeGemm gemm = MoeGemm::Auto);

// Byte offsets of the CUDA path's buffers inside its workspace (each 256-aligned): the expert
// counts (+ one for bad ids) and first rows, row_of_pair / token_of_row, the grouped GEMMs'
// pointer arrays, the gathered rows (later the down outputs), gate|up, and the SwiGLU product.
struct MoeWorkspaceLayout {
  int64_t counts, offsets, row_of_pair, token_of_row, ptrs, xp, h, act, total;
};
MoeWorkspaceLayout moe_workspace_layout(int64_t n_tok, int64_t top_k, int64_t dim, int64_t inter,
                                        int64_t n_experts);
// Device memory the CUDA path needs for these sizes (the layout's total).
inline int64_t moe_experts_workspace_bytes(int64_t n_tok, int64_t top_k, int64_t dim, int64_t inter,
                                           int64_t n_experts) {
  return moe_workspace_layout(n_tok, top_k, dim, inter, n_experts).total;
}

namespace cpu {
// The plain reference: double throughout, one (token, slot) at a time; checks every id first.
void moe_experts_reference(const MoeExpertsParams& p);
}  // namespace cpu
namespace cuda {
// Device pointers. cuBLAS's grouped GEMM (cublasGemmGroupedBatchedEx) takes its per-group sizes
// from host arrays, so the call copies the n_experts + 1 counts to the host and waits for them
// once (a host sync per call: the op cannot be captured in a CUDA graph).
void moe_experts(const MoeExpertsParams& p);
}  // namespace cuda

}  // namespace ic::ops
