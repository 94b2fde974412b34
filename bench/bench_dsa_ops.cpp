// DSA operations on the CPU: the fused indexer + top-k and sparse attention against dense
// attention. FLOPs are counted as the operations need them, not as the kernels spend them:
//   indexer: 2 * H * d per causal (t, s) pair + H (the weighted head sum);
//   attention: 4 * head_dim per attended key per query head (q.k and p*v).
// Queries are one prefill chunk of 256 tokens at the end of the context (positions
// ctx - 256 .. ctx - 1), or one decode token. Each benchmark checks its output once.
// FLOP/s is per CPU-second of the whole process (MeasureProcessCPUTime), i.e. what the
// cores achieve while they run, summed over threads: on a machine shared with other builds
// wall time mostly measures the others. Run with OMP_WAIT_POLICY=passive so that threads
// waiting at a barrier do not count as work.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "ops/attention.h"
#include "ops/indexer.h"
#include "ops/sparse_attention.h"
#include "ops/topk.h"

namespace ic::ops {
namespace {

std::vector<float> normal(size_t n, float sd, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Causal (t, s) pairs of n_q queries ending at position ctx - 1.
double causal_pairs(int64_t ctx, int64_t n_q) {
  const double q_pos0 = static_cast<double>(ctx - n_q);
  return n_q * (q_pos0 + 1) + n_q * (n_q - 1) / 2.0;
}

void report(benchmark::State& state, double flops) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Args: context, indexer heads, k, query rows, fp8 (0/1). d_I = 64.
void BM_IndexerTopk(benchmark::State& state) {
  const int64_t ctx = state.range(0), heads = state.range(1), k = state.range(2), n_q = state.range(3);
  const bool fp8 = state.range(4) != 0;
  const int64_t d = 64, q_pos0 = ctx - n_q;
  auto q = normal(n_q * heads * d, 1.0f, 1), kc = normal(ctx * d, 1.0f, 2),
       w = normal(n_q * heads, 1.0f / std::sqrt(float(heads * d)), 3);
  std::vector<uint8_t> q8(q.size()), k8(kc.size());
  std::vector<float> w8(w.size()), k_scale(ctx);
  quantize_indexer_query(q.data(), w.data(), n_q, heads, d, q8.data(), w8.data());
  quantize_fp8_rows(kc.data(), ctx, d, k8.data(), k_scale.data());
  const IndexerParams p = fp8 ? IndexerParams{q8.data(), k8.data(), k_scale.data(), w8.data(), DType::F8_E4M3,
                                              n_q, heads, d, ctx, q_pos0}
                              : IndexerParams{q.data(), kc.data(), nullptr, w.data(), DType::F32, n_q, heads,
                                              d, ctx, q_pos0};
  std::vector<int32_t> topk(n_q * k);
  for (auto _ : state) {
    cpu::indexer_topk(p, topk.data(), k);
    benchmark::DoNotOptimize(topk.data());
  }
  // Check: the fused result is top-k of the materialised fast scores.
  std::vector<float> scores(n_q * ctx);
  std::vector<int32_t> want(n_q * k);
  cpu::indexer_scores(p, scores.data());
  cpu::topk({scores.data(), want.data(), n_q, ctx, q_pos0, k});
  if (want != topk) state.SkipWithError("fused indexer top-k differs from top-k of the scores");
  report(state, causal_pairs(ctx, n_q) * (2.0 * heads * d + heads));
}

void indexer_args(benchmark::internal::Benchmark* b) {
  for (int64_t ctx : {2048, 4096, 8192})
    for (int64_t heads : {4, 8, 16})
      for (int64_t k : {64, 256}) b->Args({ctx, heads, k, 256, 0});
  for (int64_t ctx : {2048, 8192}) b->Args({ctx, 16, 256, 256, 1});  // fp8 inputs
  for (int64_t ctx : {2048, 8192}) b->Args({ctx, 16, 256, 1, 0});    // decode
}
BENCHMARK(BM_IndexerTopk)->Apply(indexer_args)->ArgNames({"ctx", "H", "k", "n_q", "fp8"})
    ->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

// SmolLM2-135M attention shapes: 9 query heads, 3 KV heads, head_dim 64.
struct AttnSetup {
  int64_t ctx, n_q, q_pos0, heads = 9, kv_heads = 3, hd = 64;
  std::vector<float> q, k, v, out, lse;
  explicit AttnSetup(int64_t ctx_, int64_t n_q_) : ctx(ctx_), n_q(n_q_), q_pos0(ctx_ - n_q_) {
    q = normal(n_q * heads * hd, 1.0f, 4);
    k = normal(kv_heads * ctx * hd, 1.0f, 5);
    v = normal(kv_heads * ctx * hd, 1.0f, 6);
    out.resize(q.size());
    lse.resize(n_q * heads);
  }
};

// Args: context, k, query rows. Each query selects k random causal positions (all of them
// when it has fewer).
void BM_SparseAttention(benchmark::State& state) {
  AttnSetup a(state.range(0), state.range(2));
  const int64_t k = state.range(1);
  std::vector<int32_t> topk(a.n_q * k, -1);
  std::mt19937 gen(7);
  double keys = 0;
  for (int64_t t = 0; t < a.n_q; ++t) {
    std::vector<int32_t> pos(a.q_pos0 + t + 1);
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), gen);
    const int64_t m = std::min<int64_t>(k, pos.size());
    std::copy(pos.begin(), pos.begin() + m, topk.begin() + t * k);
    keys += m;
  }
  const SparseAttentionParams p{a.q.data(), a.k.data(), a.v.data(), topk.data(), a.out.data(), a.lse.data(),
                                a.n_q,      a.heads,    a.kv_heads, a.hd,        a.ctx,        a.q_pos0,
                                k,          0.125f};
  for (auto _ : state) {
    cpu::sparse_attention(p);
    benchmark::DoNotOptimize(a.out.data());
  }
  std::vector<float> ref(a.out.size());
  SparseAttentionParams r = p;
  r.out = ref.data();
  r.lse = nullptr;
  r.n_q = 1;  // a sanity check of the first query; the derived bound is in test_dsa_ops
  cpu::sparse_attention_reference(r);
  for (int64_t i = 0; i < a.heads * a.hd; ++i)
    if (!(std::fabs(ref[i] - a.out[i]) <= 1e-4f)) state.SkipWithError("sparse attention differs from reference");
  report(state, keys * a.heads * 4.0 * a.hd);
}
BENCHMARK(BM_SparseAttention)->ArgNames({"ctx", "k", "n_q"})
    ->Args({2048, 256, 256})->Args({4096, 256, 256})->Args({8192, 256, 256})
    ->Args({8192, 256, 1})->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

// Args: context, query rows.
void BM_DenseAttention(benchmark::State& state) {
  AttnSetup a(state.range(0), state.range(1));
  const AttentionParams p{a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data(), a.n_q,
                          a.heads,    a.kv_heads, a.hd,       a.ctx,        a.q_pos0,     0.125f};
  for (auto _ : state) {
    cpu::attention(p);
    benchmark::DoNotOptimize(a.out.data());
  }
  for (float x : a.out)
    if (!std::isfinite(x)) state.SkipWithError("dense attention output is not finite");
  report(state, causal_pairs(a.ctx, a.n_q) * a.heads * 4.0 * a.hd);
}
BENCHMARK(BM_DenseAttention)->ArgNames({"ctx", "n_q"})
    ->Args({2048, 256})->Args({4096, 256})->Args({8192, 256})->Args({8192, 1})
    ->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

}  // namespace
}  // namespace ic::ops
