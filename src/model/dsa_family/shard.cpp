#include "model/dsa_family/shard.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ic::dsa {

namespace {

// Columns [c0, c1) of a [rows, cols] matrix as a new [rows, c1 - c0] tensor.
Tensor columns(const Tensor& w, int64_t c0, int64_t c1) {
  const int64_t rows = w.dim(0), cols = w.dim(1), m = c1 - c0;
  Tensor t = Tensor::empty({rows, m}, DType::F32);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(t.data<float>() + r * m, w.data<float>() + r * cols + c0, static_cast<size_t>(m) * sizeof(float));
  return t;
}

// The SwiGLU block's intermediate slice i of n: gate and up rows (views), down columns (a copy).
MlpWeights mlp_slice(const MlpWeights& w, int i, int n) {
  if (!w.defined()) return {};
  const int64_t I = w.gate.dim(0), b = I * i / n, e = I * (i + 1) / n;
  return {w.gate.slice_rows(b, e), w.up.slice_rows(b, e), columns(w.down, b, e)};
}

bool any_layer(const MlaMoeConfig& c, bool moe) {
  return std::any_of(c.moe_layer.begin(), c.moe_layer.end(), [moe](bool m) { return m == moe; });
}

}  // namespace

void check_parallel(const MlaMoeConfig& c, const ParallelSpec& p, const std::string& where) {
  IC_CHECK(p.tp >= 1 && p.ep >= 1, "{}: --tp {} --ep {}: both must be at least 1", where, p.tp, p.ep);
  IC_CHECK(p.ep == 1 || p.ep == p.tp,
           "{}: --ep {} with --tp {}: expert parallelism runs inside the tensor-parallel group, so --ep is 1 "
           "(routed experts split on their intermediate dim) or equal to --tp",
           where, p.ep, p.tp);
  const int n = p.tp;
  auto divides = [&](int64_t v, const char* what, const char* key, int by, const char* flag) {
    IC_CHECK(v % by == 0, "{}: {} {} ({}) do not split over {} {}: each rank takes 1/{} of them, so {} must divide {}",
             where, v, what, key, flag, by, by, by, v);
  };
  divides(c.n_heads, "attention heads", "num_attention_heads", n, "--tp");
  if (any_layer(c, false)) divides(c.intermediate, "dense MLP channels", "intermediate_size", n, "--tp");
  if (any_layer(c, true)) {
    if (c.n_shared_experts > 0)
      divides(c.moe_intermediate * c.n_shared_experts, "shared-expert channels",
              "moe_intermediate_size x n_shared_experts", n, "--tp");
    if (p.ep > 1)
      divides(c.n_routed_experts, "routed experts", "n_routed_experts", p.ep, "--ep");
    else if (n > 1)
      divides(c.moe_intermediate, "routed-expert channels", "moe_intermediate_size", n, "--tp");
  }
}

RankShard shard_model(const MlaMoeConfig& c, const std::vector<LayerWeights>& full, const ParallelSpec& p, int rank) {
  const int n = p.tp;
  IC_ASSERT(rank >= 0 && rank < n);
  RankShard s;
  s.rank = rank;
  s.size = n;
  s.cfg = c;
  s.cfg.n_heads = c.n_heads / n;
  const int64_t h0 = s.cfg.n_heads * rank, h1 = h0 + s.cfg.n_heads;
  const int64_t qk = c.qk_head_dim(), kvb = c.qk_nope_dim + c.v_head_dim, v = c.v_head_dim;
  s.layers.reserve(full.size());
  for (const LayerWeights& L : full) {
    RankLayer R;
    R.attn = L.attn;  // q_a, kv_a, norms: replicated views
    if (L.attn.q_b.defined()) R.attn.q_b = L.attn.q_b.slice_rows(h0 * qk, h1 * qk);
    if (L.attn.q_proj.defined()) R.attn.q_proj = L.attn.q_proj.slice_rows(h0 * qk, h1 * qk);
    R.attn.kv_b = L.attn.kv_b.slice_rows(h0 * kvb, h1 * kvb);
    R.attn.o = columns(L.attn.o, h0 * v, h1 * v);
    if (rank != 0) R.attn.o_bias = Tensor();  // added once, by rank 0, before the sum
    if (!L.moe) {
      R.mlp = mlp_slice(L.mlp, rank, n);
    } else {
      R.shared = mlp_slice(L.experts.shared, rank, n);
      const int64_t E = static_cast<int64_t>(L.experts.experts.size());
      R.experts.resize(static_cast<size_t>(E));
      if (p.ep > 1) {
        R.expert_begin = E * rank / p.ep;
        R.expert_end = E * (rank + 1) / p.ep;
        for (int64_t e = R.expert_begin; e < R.expert_end; ++e) R.experts[e] = L.experts.experts[e];
      } else {
        R.expert_begin = 0;
        R.expert_end = E;
        for (int64_t e = 0; e < E; ++e) R.experts[e] = mlp_slice(L.experts.experts[e], rank, n);
      }
    }
    s.layers.push_back(std::move(R));
  }
  return s;
}

int64_t shard_copy_bytes(const RankShard& s) {
  int64_t b = 0;
  for (const RankLayer& R : s.layers) {
    b += R.attn.o.nbytes();
    if (R.mlp.defined()) b += R.mlp.down.nbytes();
    if (R.shared.defined()) b += R.shared.down.nbytes();
    if (s.size > 1 && !R.experts.empty() && R.expert_end - R.expert_begin == static_cast<int64_t>(R.experts.size()))
      for (const MlpWeights& e : R.experts) b += e.down.nbytes();
  }
  return b;
}

}  // namespace ic::dsa
