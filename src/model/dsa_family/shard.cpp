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
  IC_CHECK(!p.a2a || (p.ep == p.tp && p.tp > 1),
           "{}: the all-to-all MoE path (--ep-a2a) splits experts over the ranks: it needs --ep equal to --tp and "
           "more than one rank (got --tp {} --ep {})", where, p.tp, p.ep);
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
    if (c.n_shared_experts > 0 && !p.a2a)
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
  s.a2a = p.a2a;
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
      R.shared = p.a2a ? L.experts.shared : mlp_slice(L.experts.shared, rank, n);
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

Tensor moe_forward_a2a(parallel::Communicator& comm, const RankLayer& r, const Routing& routing, const Tensor& h) {
  const int N = comm.size(), me = comm.rank();
  const int64_t n = h.dim(0), D = h.dim(1), K = routing.ids.dim(1), E = static_cast<int64_t>(r.experts.size());
  const int64_t per = E / N;  // experts per rank (check_parallel: N divides E)
  auto first_token = [n, N](int s) { return n * s / N; };
  const int64_t t0 = first_token(me), t1 = first_token(me + 1);
  const int32_t* ids = routing.ids.data<int32_t>();
  const float* wts = routing.weights.data<float>();

  // Dispatch: the rank's (token, choice) pairs in that order, grouped by the expert's owner.
  std::vector<std::vector<int64_t>> pairs(static_cast<size_t>(N));  // t * K + i
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < K; ++i) pairs[static_cast<size_t>(ids[t * K + i] / per)].push_back(t * K + i);
  std::vector<int64_t> send_rows(static_cast<size_t>(N)), recv_rows(static_cast<size_t>(N));
  for (int d = 0; d < N; ++d) send_rows[d] = static_cast<int64_t>(pairs[d].size());
  comm.all_to_all(send_rows, recv_rows);
  const int64_t W = D + 1;  // the row, then its expert id
  std::vector<float> send, recv;
  std::vector<int64_t> send_counts(static_cast<size_t>(N)), recv_counts(static_cast<size_t>(N));
  int64_t received = 0;
  for (int d = 0; d < N; ++d) {
    for (int64_t p : pairs[d]) {
      const float* row = h.data<float>() + (p / K) * D;
      send.insert(send.end(), row, row + D);
      send.push_back(static_cast<float>(ids[p]));  // exact: ids are below 2^24
    }
    send_counts[d] = send_rows[d] * W;
    recv_counts[d] = recv_rows[d] * W;
    received += recv_rows[d];
  }
  recv.resize(static_cast<size_t>(received * W));
  comm.all_to_all_v(send, send_counts, recv, recv_counts);

  // The owner's work: expert(row), unweighted, back in the order received.
  std::vector<float> out(static_cast<size_t>(received * D));
  for (int64_t j = 0; j < received; ++j) {
    const float* row = recv.data() + j * W;
    const int64_t e = static_cast<int64_t>(row[D]);
    IC_CHECK(e >= r.expert_begin && e < r.expert_end, "MoE all-to-all: rank {} was sent a row for expert {}, which "
             "it does not own ([{}, {}))", me, e, r.expert_begin, r.expert_end);
    Tensor x = Tensor::empty({1, D}, DType::F32);
    std::copy_n(row, D, x.data<float>());
    const Tensor y = mlp_forward(r.experts[static_cast<size_t>(e)], x);
    std::copy_n(y.data<float>(), D, out.data() + j * D);
  }
  // Combine: the outputs go back to the tokens' ranks.
  std::vector<int64_t> back_send(static_cast<size_t>(N)), back_recv(static_cast<size_t>(N));
  int64_t sent = 0;
  for (int d = 0; d < N; ++d) {
    back_send[d] = recv_rows[d] * D;
    back_recv[d] = send_rows[d] * D;
    sent += send_rows[d];
  }
  std::vector<float> back(static_cast<size_t>(sent * D));
  comm.all_to_all_v(out, back_send, back, back_recv);

  // Where each pair's output landed: rank d's chunk, in dispatch order.
  std::vector<int64_t> at(static_cast<size_t>((t1 - t0) * K));
  int64_t offset = 0;
  for (int d = 0; d < N; ++d) {
    for (size_t j = 0; j < pairs[d].size(); ++j) at[pairs[d][j] - t0 * K] = offset + static_cast<int64_t>(j);
    offset += static_cast<int64_t>(pairs[d].size());
  }

  // The rank's tokens as moe_forward computes them: shared experts, then the weighted choices in
  // order, accumulated in double and added once.
  const int64_t rows = t1 - t0, chunk = (n + N - 1) / N;
  const Tensor mine = h.slice_rows(t0, t1);
  const Tensor own = r.shared.defined() && rows > 0 ? mlp_forward(r.shared, mine)
                                                    : Tensor::zeros({std::max<int64_t>(rows, 1), D}, DType::F32);
  std::vector<float> gather_in(static_cast<size_t>(chunk * D), 0.0f);
  std::vector<double> acc(static_cast<size_t>(D));
  for (int64_t t = 0; t < rows; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t i = 0; i < K; ++i) {
      const float* y = back.data() + at[t * K + i] * D;
      const double wt = wts[(t0 + t) * K + i];
      for (int64_t d = 0; d < D; ++d) acc[d] += wt * y[d];
    }
    const float* o = own.data<float>() + t * D;
    for (int64_t d = 0; d < D; ++d) gather_in[t * D + d] = static_cast<float>(o[d] + acc[d]);
  }
  std::vector<float> all(static_cast<size_t>(N * chunk * D));
  comm.all_gather(gather_in, all);
  Tensor result = Tensor::empty({n, D}, DType::F32);
  for (int s = 0; s < N; ++s) {
    const int64_t b = first_token(s), e = first_token(s + 1);
    std::copy_n(all.data() + s * chunk * D, (e - b) * D, result.data<float>() + b * D);
  }
  return result;
}

int64_t shard_copy_bytes(const RankShard& s) {
  int64_t b = 0;
  for (const RankLayer& R : s.layers) {
    b += R.attn.o.nbytes();
    if (R.mlp.defined()) b += R.mlp.down.nbytes();
    if (R.shared.defined() && !s.a2a) b += R.shared.down.nbytes();
    if (s.size > 1 && !R.experts.empty() && R.expert_end - R.expert_begin == static_cast<int64_t>(R.experts.size()))
      for (const MlpWeights& e : R.experts) b += e.down.nbytes();
  }
  return b;
}

}  // namespace ic::dsa
