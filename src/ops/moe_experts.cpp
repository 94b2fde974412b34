#include "ops/moe_experts.h"

#include "core/error.h"

namespace ic::ops {

MoeWorkspaceLayout moe_workspace_layout(int64_t n_tok, int64_t top_k, int64_t dim, int64_t inter,
                                        int64_t n_experts) {
  const int64_t pairs = n_tok * top_k;
  MoeWorkspaceLayout l{};
  int64_t at = 0;
  auto take = [&at](int64_t bytes) {  // 256-aligned, as cuBLAS prefers its operands
    const int64_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  l.counts = take((n_experts + 1) * 4);
  l.offsets = take((n_experts + 1) * 4);
  l.row_of_pair = take(pairs * 4);
  l.token_of_row = take(pairs * 4);
  l.ptrs = take(6 * n_experts * static_cast<int64_t>(sizeof(void*)));  // A, B, C of both GEMMs
  l.xp = take(pairs * dim * 2);
  l.h = take(pairs * 2 * inter * 2);
  l.act = take(pairs * inter * 2);
  l.total = at;
  return l;
}

void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const Tensor& w_gate_up,
                 const Tensor& w_down, Tensor& out, const Tensor* workspace, MoeGemm gemm) {
  const Device dev = x.device();
  check_tensor(x, "moe_experts x", DType::BF16, dev, 2);
  check_tensor(ids, "moe_experts ids", DType::I32, dev, 2);
  check_tensor(weights, "moe_experts weights", DType::F32, dev, 2);
  check_tensor(w_gate_up, "moe_experts w_gate_up", DType::BF16, dev, 3);
  check_tensor(w_down, "moe_experts w_down", DType::BF16, dev, 3);
  IC_CHECK(out.defined() && (out.dtype() == DType::F32 || out.dtype() == DType::BF16),
           "moe_experts: out must be F32 or BF16, got {}", out.defined() ? out.desc() : std::string("an undefined tensor"));
  check_tensor(out, "moe_experts out", out.dtype(), dev, 2);
  const int64_t n_tok = x.dim(0), dim = x.dim(1), top_k = ids.dim(1);
  const int64_t n_experts = w_gate_up.dim(0), inter = w_gate_up.dim(1) / 2;
  IC_CHECK(ids.dim(0) == n_tok && top_k >= 1 && weights.shape() == ids.shape(),
           "moe_experts: ids {} and weights {} must be [{}, top_k >= 1] for x {}", ids.desc(), weights.desc(), n_tok,
           x.desc());
  IC_CHECK(w_gate_up.dim(1) % 2 == 0 && inter >= 1 && w_gate_up.dim(2) == dim,
           "moe_experts: w_gate_up {} must be [n_experts, 2 * inter, {}] (gate rows, then up rows)",
           w_gate_up.desc(), dim);
  IC_CHECK(w_down.dim(0) == n_experts && w_down.dim(1) == dim && w_down.dim(2) == inter,
           "moe_experts: w_down {} must be [{}, {}, {}] for w_gate_up {}", w_down.desc(), n_experts, dim, inter,
           w_gate_up.desc());
  IC_CHECK(out.dim(0) == n_tok && out.dim(1) == dim, "moe_experts: out {} must be [{}, {}]", out.desc(), n_tok, dim);
  MoeExpertsParams p{x.data<uint16_t>(),        ids.data<int32_t>(),   weights.data<float>(),
                     w_gate_up.data<uint16_t>(), w_down.data<uint16_t>(), out.raw(),
                     out.dtype(),               n_tok,                 top_k,
                     dim,                       inter,                 n_experts};
  p.gemm = gemm;
  if (dev == Device::CPU) return cpu::moe_experts_reference(p);
#ifdef IC_WITH_CUDA
  if (workspace && workspace->defined()) {
    IC_CHECK(workspace->device() == Device::CUDA, "moe_experts: workspace {} must be on the GPU", workspace->desc());
    const int64_t need = moe_experts_workspace_bytes(n_tok, top_k, dim, inter, n_experts);
    IC_CHECK(workspace->nbytes() >= need, "moe_experts: workspace {} holds {} bytes, {} needed", workspace->desc(),
             workspace->nbytes(), need);
    p.workspace = workspace->raw();
  }
  cuda::moe_experts(p);
#else
  (void)workspace;
  fail_no_cuda("moe_experts");
#endif
}

}  // namespace ic::ops
