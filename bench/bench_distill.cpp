// Indexer distillation on the CPU: loss + hand-written backward per sequence-layer, and the
// teacher targets. FLOPs counted as the math needs them (not as the kernels spend them):
//   loss+grad: projections forward and weight gradients 2 * 2 n D O (O = H d + d + H), and per
//   causal pair 2 H d (q.k) + 2 H d (dq) + 2 H d (dk) + 4 H (score and dw); the fast path also
//   recomputes q.k in its key pass (+2 H d per pair, not counted).
//   teacher: per causal pair and query head 2 d (q.k) + ~4 (softmax, mean).
// Each benchmark checks its result once (finite loss, rows of the target summing to 1).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "indexcache/distill_loss.h"
#include "indexcache/teacher.h"

namespace ic {
namespace {

Tensor normal(const Shape& s, float sd, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sd);
  Tensor t = Tensor::empty(s, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(gen);
  return t;
}

void BM_DistillLossGrad(benchmark::State& state) {
  const int64_t n = state.range(0), H = state.range(1), D = 576, d = 64;
  IndexerConfig cfg;
  cfg.n_heads = H;
  cfg.head_dim = d;
  cfg.rope_dim = 64;
  cfg.topk = 256;
  const IndexerWeights w = IndexerWeights::random(cfg, D, 1);
  const Tensor x = normal({n, D}, 1.0f, 2);
  const Tensor p = attention_targets(normal({n, 9, 64}, 0.3f, 3), normal({n, 3, 64}, 0.3f, 4));
  IndexerWeights g = IndexerWeights::zeros(cfg, D);
  const DistillStats st = distill_loss(cfg, w, {x, p, Tensor()}, &g);
  if (!std::isfinite(st.loss) || st.loss < 0 || st.rows != n) state.SkipWithError("bad loss");
  for (auto _ : state) benchmark::DoNotOptimize(distill_loss(cfg, w, {x, p, Tensor()}, &g));
  const double O = H * d + d + H, pairs = n * (n + 1) / 2.0;
  const double flops = 4.0 * n * D * O + pairs * (6.0 * H * d + 4.0 * H);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = flops * 1e-9;
}
BENCHMARK(BM_DistillLossGrad)->ArgsProduct({{512, 1024, 2048}, {4, 8}})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TeacherTargets(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Tensor q = normal({n, 9, 64}, 0.3f, 5), k = normal({n, 3, 64}, 0.3f, 6);
  const Tensor p = attention_targets(q, k);
  double row = 0.0;
  for (int64_t s = 0; s < n; ++s) row += p.data<float>()[(n - 1) * n + s];
  if (std::abs(row - 1.0) > 1e-3) state.SkipWithError("target row does not sum to 1");
  for (auto _ : state) benchmark::DoNotOptimize(attention_targets(q, k));
  const double flops = n * (n + 1) / 2.0 * 9 * (2.0 * 64 + 4);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TeacherTargets)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace ic
