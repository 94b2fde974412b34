// Quantised GEMM workbench: each SmolLM2-135M shape at T = 1 and 512 on 1 and 2 threads, the
// whole model's GEMMs per token, and this machine's ceilings (vpdpbusd int8 ops/s, streaming
// read GB/s) to compare against. Every GEMM benchmark first checks one token of its output
// against qgemm_reference within qgemm_error_bound.
//
// Rates are per CPU second of the calling thread (Google Benchmark's default), not wall time:
// the machine is shared, and a descheduled process would otherwise look slow. With 2 threads
// the caller's CPU time includes its OpenMP waits, so on an idle machine it reads as wall
// time. Run with --benchmark_repetitions=N and take the best.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/qgemm.h"
#include "ops/qgemm_kernels.h"

namespace ic::ops {
namespace {

// Random GGUF rows of Q4_1 or Q8_0 with realistic scales.
std::vector<uint8_t> random_rows(DType type, int64_t n_out, int64_t n_in, std::mt19937& rng) {
  std::vector<uint8_t> out(n_out * dtype_row_bytes(type, n_in));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& v : out) v = static_cast<uint8_t>(byte(rng));
  const int64_t bb = dtype_block_bytes(type);
  for (int64_t p = 0; p < static_cast<int64_t>(out.size()); p += bb) {
    const uint16_t d = f32_to_f16(0.004f), m = f32_to_f16(-0.03f);
    std::memcpy(&out[p], &d, 2);
    if (type == DType::Q4_1) std::memcpy(&out[p + 2], &m, 2);
  }
  return out;
}

std::vector<float> random_acts(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

void check_first_token(const PackedWeight& w, const float* x, const float* y) {
  std::vector<float> ref(w.n_out()), bound(w.n_out());
  qgemm_reference(w, x, 1, ref.data());
  qgemm_error_bound(w, x, 1, bound.data());
  for (int64_t o = 0; o < w.n_out(); ++o)
    IC_CHECK(std::fabs(y[o] - ref[o]) <= bound[o], "bench qgemm: output {} is {}, reference {}",
             o, y[o], ref[o]);
}

// Args: n_out, n_in, n_tok, threads.
void BM_Qgemm(benchmark::State& state) {
  const int64_t n_out = state.range(0), n_in = state.range(1), n_tok = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const DType type = n_out == 49152 ? DType::Q8_0 : DType::Q4_1;  // the LM head is Q8_0
  std::mt19937 rng(1);
  const auto raw = random_rows(type, n_out, n_in, rng);
  const PackedWeight w = PackedWeight::pack(type, raw.data(), n_out, n_in);
  const auto x = random_acts(n_tok * n_in, rng);
  std::vector<float> y(n_tok * n_out);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  qgemm(w, x.data(), n_tok, y.data());
  check_first_token(w, x.data(), y.data());
  for (auto _ : state) {
    qgemm(w, x.data(), n_tok, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  omp_set_num_threads(saved);
  const double calls = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n_out * n_in * n_tok * calls,
                                                 benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1000);
  state.counters["W_GB/s"] = benchmark::Counter(static_cast<double>(w.bytes()) * calls,
                                                benchmark::Counter::kIsRate,
                                                benchmark::Counter::kIs1000);
  state.SetLabel(fmt::format("{} {}", dtype_name(type), cpu_isa_name(cpu_isa())));
}

void qgemm_args(benchmark::internal::Benchmark* b) {
  const int64_t shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
  for (int threads : {1, 2})
    for (int64_t t : {1, 512})
      for (auto [n, k] : shapes) b->Args({n, k, t, threads});
  b->ArgNames({"N", "K", "T", "thr"})->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_Qgemm)->Apply(qgemm_args);

// Activation quantisation alone (part of every qgemm call). Args: n_tok, n_in.
void BM_QuantizeActs(benchmark::State& state) {
  const int64_t n_tok = state.range(0), n_in = state.range(1);
  std::mt19937 rng(3);
  const auto x = random_acts(n_tok * n_in, rng);
  QuantizedActs xq;
  for (auto _ : state) {
    quantize_activations(x.data(), n_tok, n_in, xq);
    benchmark::DoNotOptimize(xq.q.data());
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * n_tok * n_in * state.iterations(),
                                              benchmark::Counter::kIsRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_QuantizeActs)->ArgsProduct({{1, 512}, {576, 1536}})->ArgNames({"T", "K"});

// Every GEMM of one forward pass of SmolLM2-135M (30 layers of q, k, v, o, gate, up, down in
// Q4_1, then the Q8_0 LM head on the last token only) with distinct weights, so decode streams
// all ~98 MB from memory as the real model does. Args: n_tok, threads.
void BM_ModelGemms(benchmark::State& state) {
  const int64_t n_tok = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  std::mt19937 rng(2);
  struct Mat {
    int64_t n, k;
  };
  const Mat layer[] = {{576, 576}, {192, 576}, {192, 576}, {576, 576},
                       {1536, 576}, {1536, 576}, {576, 1536}};
  std::vector<PackedWeight> ws;
  int64_t bytes = 0;
  for (int l = 0; l < 30; ++l)
    for (const Mat& m : layer) {
      const auto raw = random_rows(DType::Q4_1, m.n, m.k, rng);
      ws.push_back(PackedWeight::pack(DType::Q4_1, raw.data(), m.n, m.k));
      bytes += ws.back().bytes();
    }
  const auto raw_head = random_rows(DType::Q8_0, 49152, 576, rng);
  const PackedWeight head = PackedWeight::pack(DType::Q8_0, raw_head.data(), 49152, 576);
  bytes += head.bytes();
  const auto x = random_acts(n_tok * 1536, rng);
  std::vector<float> y(n_tok * 1536), logits(49152);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  for (auto _ : state) {
    for (const PackedWeight& w : ws) qgemm(w, x.data(), n_tok, y.data());
    qgemm(head, x.data() + (n_tok - 1) * 576, 1, logits.data());
    benchmark::DoNotOptimize(logits.data());
  }
  omp_set_num_threads(saved);
  const double calls = static_cast<double>(state.iterations());
  state.counters["tok/s"] = benchmark::Counter(n_tok * calls, benchmark::Counter::kIsRate);
  state.counters["W_GB/s"] = benchmark::Counter(static_cast<double>(bytes) * calls,
                                                benchmark::Counter::kIsRate,
                                                benchmark::Counter::kIs1000);
  state.SetLabel(fmt::format("{:.1f} MB packed", bytes / 1e6));
}
BENCHMARK(BM_ModelGemms)
    ->ArgsProduct({{1, 512}, {1, 2}})
    ->ArgNames({"T", "thr"})
    ->Unit(benchmark::kMillisecond);

// Ceiling: vpdpbusd zmm throughput, 2 ops (multiply + add) per int8 product. Arg: threads.
void BM_PeakVnni(benchmark::State& state) {
  if (!cpu_supports(CpuIsa::Avx512)) {
    state.SkipWithError("no AVX-512 VNNI");
    return;
  }
  const int threads = static_cast<int>(state.range(0));
  const int64_t iters = 1 << 20;
  int64_t sink = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += detail::probe_vpdpbusd_avx512(iters);
  }
  benchmark::DoNotOptimize(sink);
  state.counters["GOP/s"] = benchmark::Counter(
      2.0 * 64 * 24 * iters * threads * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_PeakVnni)->Arg(1)->Arg(2)->ArgName("thr");

// Ceiling: streaming read of 256 MB (far beyond the 32 MB L3). Arg: threads.
void BM_StreamRead(benchmark::State& state) {
  if (!cpu_supports(CpuIsa::Avx512)) {
    state.SkipWithError("no AVX-512");
    return;
  }
  const int threads = static_cast<int>(state.range(0));
  const int64_t bytes = int64_t{256} << 20;
  Storage buf(bytes, Device::CPU);
  auto* p = static_cast<uint8_t*>(buf.data());
  std::memset(p, 1, bytes);
  int64_t sink = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      const int64_t part = bytes / threads;
      sink += detail::probe_stream_read_avx512(p + omp_get_thread_num() * part, part);
    }
  }
  benchmark::DoNotOptimize(sink);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * state.iterations(),
                                              benchmark::Counter::kIsRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_StreamRead)->Arg(1)->Arg(2)->ArgName("thr");

}  // namespace
}  // namespace ic::ops
