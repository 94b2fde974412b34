// The whole SmolLM2 forward on the GPU: against the plain C++ reference, decode against prefill,
// and perplexity against the CPU fast path. Skips without a GPU (always in a CPU-only build) or
// without the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/device.h"
#include "model/dsa.h"
#include "model/llama.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "model_test_util.h"
#include "test_util.h"

namespace ic {
namespace {

// The GPU computes in f32 with the exact dequantised weights, so it differs from the plain
// reference (f32 storage, f64 accumulation) by rounding alone. The NumPy reference measured
// f32 rounding through all 30 layers at < 1e-3 nats on log-probs (docs/REFERENCE.md); we hold
// the GPU to that on the tokens where a log-prob is well conditioned (p > 1e-3).
constexpr double kTol = 1e-3;
// The CPU fast path quantises activations to int8 and is held to 0.5% of the reference
// perplexity (test_model_reference.cpp); the GPU, near-exact, must be as close to it.
constexpr double kPplRelTol = 0.005;

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

LlamaModel& gpu_model(const std::string& path) {
  static std::unique_ptr<LlamaModel> m;  // loading takes a moment: share it across tests
  if (!m) m = LlamaModel::load(path, Device::CUDA);
  return *m;
}

// Largest log-prob difference over the tokens the reference gives p > 1e-3, row by row.
using test::log_softmax;

double worst_logprob_gap(const float* ref, const float* got, int64_t rows, int64_t V) {
  double worst = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const auto lr = log_softmax(ref + t * V, V), lg = log_softmax(got + t * V, V);
    for (int64_t v = 0; v < V; ++v)
      if (lr[v] > std::log(1e-3)) worst = std::max(worst, std::fabs(lr[v] - lg[v]));
  }
  return worst;
}

TEST(ModelCuda, ForwardMatchesPlainReference) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = gpu_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("The capital of France is Paris, and the capital of Italy is");
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab;
  const Tensor ref = llama_reference_forward(m, ids);  // reads the GPU's own dequantised weights
  KVCache kv(m.config(), n, Device::CUDA);
  Tensor gpu;
  m.forward(ids, kv, gpu, true);
  for (int64_t i = 0; i < n * V; ++i) ASSERT_TRUE(std::isfinite(gpu.data<float>()[i])) << i;
  const double worst = worst_logprob_gap(ref.data<float>(), gpu.data<float>(), n, V);
  std::printf("[ model cuda vs reference ] %lld tokens, worst log-prob gap %.2e nats\n", (long long)n, worst);
  EXPECT_LT(worst, kTol);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> row(ref.data<float>() + t * V, ref.data<float>() + (t + 1) * V);
    const int32_t top = argmax(row);
    std::nth_element(row.begin(), row.begin() + 1, row.end(), std::greater<>());
    if (row[0] - row[1] > 2 * kTol) EXPECT_EQ(argmax({gpu.data<float>() + t * V, (size_t)V}), top) << "position " << t;
  }
  EXPECT_EQ(m.tokenizer().decode(std::vector<int32_t>{argmax({gpu.data<float>() + (n - 1) * V, (size_t)V})}), " Rome");
}

// Decode runs other kernels than prefill (split-K attention, cuBLAS's n = 1 path), so the two
// agree to rounding, not bitwise: held to the same bound as against the reference.
TEST(ModelCuda, TokenByTokenDecodeMatchesPrefill) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = gpu_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("One, two, three, four, five, six, seven, eight, nine, ten");
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab;
  KVCache kv1(m.config(), n, Device::CUDA), kv2(m.config(), n, Device::CUDA);
  Tensor all, one;
  m.forward(ids, kv1, all, true);
  const int64_t half = n / 2;
  m.forward(std::span(ids).subspan(0, half), kv2, one, false);
  double worst = 0;
  for (int64_t t = half; t < n; ++t) {
    m.forward(std::span(ids).subspan(t, 1), kv2, one, false);
    worst = std::max(worst, worst_logprob_gap(all.data<float>() + t * V, one.data<float>(), 1, V));
  }
  std::printf("[ model cuda decode vs prefill ] worst log-prob gap %.2e nats\n", worst);
  EXPECT_LT(worst, kTol);
}

TEST(ModelCuda, PerplexityMatchesCpuFastPath) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  const std::string text_path = std::string(IC_SOURCE_DIR) + "/tests/data/reference_text.txt";
  if (!std::filesystem::exists(text_path)) GTEST_SKIP() << text_path << " is missing";
  std::ifstream in(text_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  LlamaModel& gm = gpu_model(path);
  std::vector<int32_t> ids = gm.tokenizer().encode(ss.str(), false);
  ids.resize(std::min<size_t>(ids.size(), 768));  // three windows of 256
  const PerplexityResult g = perplexity(gm, ids, 256);
  const auto cm = LlamaModel::load(path, Device::CPU);
  const PerplexityResult c = perplexity(*cm, ids, 256);
  ASSERT_EQ(g.n_scored, c.n_scored);
  double mad = 0;
  for (size_t i = 0; i < g.nll.size(); ++i) mad += std::fabs(g.nll[i] - c.nll[i]);
  mad /= g.nll.size();
  std::printf("[ perplexity %lld tokens, ctx 256 ] cuda %.4f  cpu %.4f  ratio %.5f  mean |nll gap| %.4f\n",
              (long long)ids.size(), g.ppl, c.ppl, g.ppl / c.ppl, mad);
  // Per token only reported: the gap is the CPU path's int8 quantisation, which
  // test_model_reference.cpp bounds against float64; the GPU's own bound is the test below.
  EXPECT_NEAR(g.ppl / c.ppl, 1.0, kPplRelTol);
}

// Against the independent float64 NumPy forward (scripts/reference_forward.py; $IC_REFERENCE_JSON,
// else build/reference.json), with the tolerances docs/REFERENCE.md derives for a float32
// engine (8-10x over its measured float32-vs-float64 gaps): prompt log-probs max 1e-3, mean 1e-4;
// text per-token nll max 5e-3, mean 1e-4; perplexity 1e-4 relative.
TEST(ModelCuda, MatchesNumpyFloat64Reference) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  std::string json_path = std::string(IC_SOURCE_DIR) + "/build/reference.json";
  if (const char* p = std::getenv("IC_REFERENCE_JSON"); p && *p) json_path = p;
  if (!std::filesystem::exists(json_path)) GTEST_SKIP() << "no reference JSON at " << json_path;
  std::ifstream in(json_path);
  const nlohmann::json ref = nlohmann::json::parse(in);
  LlamaModel& m = gpu_model(path);
  const int64_t V = m.config().vocab;
  double worst = 0, sum = 0;
  int64_t count = 0;
  auto gap = [&](double mine, double theirs) {
    const double d = std::fabs(mine - theirs);
    worst = std::max(worst, d);
    sum += d;
    ++count;
  };
  for (const auto& p : ref["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto lp_next = p["logprob_next"].get<std::vector<double>>();
    const auto last = p["last_logprobs"].get<std::vector<double>>();
    const auto top1 = p["top1"].get<std::vector<int32_t>>();
    const int64_t n = static_cast<int64_t>(ids.size());
    KVCache kv(m.config(), n, Device::CUDA);
    Tensor logits;
    m.forward(ids, kv, logits, true);
    for (int64_t t = 0; t < n; ++t) {
      const std::span<const float> row(logits.data<float>() + t * V, static_cast<size_t>(V));
      if (t + 1 < n) gap(log_prob(row, ids[t + 1]), lp_next[t]);
      EXPECT_EQ(argmax(row), top1[t]) << "position " << t;  // reference margins are >= 0.015
    }
    const std::span<const float> row(logits.data<float>() + (n - 1) * V, static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v)
      if (last[v] > std::log(1e-3)) gap(log_prob(row, static_cast<int32_t>(v)), last[v]);
  }
  std::printf("[ model cuda vs numpy f64 ] prompts: %lld log-probs, max |gap| %.2e, mean %.2e\n", (long long)count,
              worst, sum / count);
  EXPECT_LT(worst, 1e-3);
  EXPECT_LT(sum / count, 1e-4);

  const auto& r = ref["perplexity"];
  const auto ids = r["ids"].get<std::vector<int32_t>>();
  const auto nll = r["nll"].get<std::vector<double>>();
  const PerplexityResult mine = perplexity(m, ids, r["ctx"].get<int64_t>());
  ASSERT_EQ(mine.nll.size(), nll.size());
  worst = sum = 0;
  count = 0;
  for (size_t i = 0; i < nll.size(); ++i) gap(mine.nll[i], nll[i]);
  const double rel = mine.ppl / r["ppl"].get<double>() - 1.0;
  std::printf("[ model cuda vs numpy f64 ] text: %lld tokens, nll max |gap| %.2e, mean %.2e, ppl %.5f vs %.5f (%.1e)\n",
              (long long)count, worst, sum / count, mine.ppl, r["ppl"].get<double>(), rel);
  EXPECT_LT(worst, 5e-3);
  EXPECT_LT(sum / count, 1e-4);
  EXPECT_LT(std::fabs(rel), 1e-4);
}

// DSA on the GPU: the committed SmolLM2 indexers through the CUDA indexer (bf16 keys), top-k and
// sparse attention.
std::string committed_indexers() {
  return std::string(IC_SOURCE_DIR) + "/models/indexers/smollm2-h8d64-allF.safetensors";
}

std::vector<int32_t> reference_ids(const LlamaModel& m, size_t n) {
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/reference_text.txt", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> ids = m.tokenizer().encode(ss.str(), false);
  ids.resize(std::min(ids.size(), n));
  return ids;
}

struct DsaOff {  // the shared GPU model returns to dense whatever the test does
  LlamaModel& m;
  ~DsaOff() {
    m.set_dsa(nullptr);
    m.set_tensor_callback(nullptr);
  }
};

// With k >= the context every causal key is selected, so DSA must be dense attention: the same
// logits up to f32 rounding (the sparse kernel sums in another order), whatever the indexer.
TEST(ModelCuda, DsaWithTopkCoveringTheContextIsDense) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  if (!std::filesystem::exists(committed_indexers())) GTEST_SKIP() << committed_indexers() << " is missing";
  LlamaModel& m = gpu_model(path);
  DsaOff off{m};
  const std::vector<int32_t> ids = reference_ids(m, 200);
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab, L = m.config().n_layers;
  Tensor dense, sparse;
  KVCache kv_dense(m.config(), n, Device::CUDA);
  m.forward(ids, kv_dense, dense, true);
  m.set_dsa(std::make_shared<DsaSpec>(load_indexers(committed_indexers(), L, m.config().dim,
                                                    LayerPattern::from_freq(L, 4), n)));
  KVCache kv = m.make_kv(n);
  m.forward(ids, kv, sparse, true);
  const double worst = worst_logprob_gap(dense.data<float>(), sparse.data<float>(), n, V);
  std::printf("[ model cuda dsa, k >= context ] worst log-prob gap to dense %.2e nats\n", worst);
  EXPECT_LT(worst, kTol);
}

// Real selections (k 64 of up to 256 keys, IndexCache 1/4): GPU against the CPU engine. The CPU
// path quantises activations to int8 (0.5% of dense perplexity against float64) and selects with
// f32 keys where the GPU uses bf16, so near-tied scores may select differently. The selections
// are the sharp check: >= 98% of the CPU's entries per layer (the H200 measured 99.2-99.99%).
// Perplexity is held to 2%: with 64 keys per query each attended key weighs more, and the int8
// noise moved DSA perplexity by 1.19% on the H200 (dense: 0.27%); a broken selection or sparse
// kernel moves it by tens of percent (uniform 1/4 against DSA alone is +15% or more).
// Prefill followed by decode on the GPU must give one long prefill's log-probs.
TEST(ModelCuda, DsaMatchesCpuAndDecodesLikePrefill) {
  IC_CUDA_OR_SKIP();
  IC_TEST_MODEL_OR_SKIP(path);
  if (!std::filesystem::exists(committed_indexers())) GTEST_SKIP() << committed_indexers() << " is missing";
  LlamaModel& gm = gpu_model(path);
  DsaOff off{gm};
  const auto cm = LlamaModel::load(path, Device::CPU);
  const int64_t L = gm.config().n_layers, V = gm.config().vocab;
  auto spec = std::make_shared<DsaSpec>(
      load_indexers(committed_indexers(), L, gm.config().dim, LayerPattern::from_freq(L, 4), 64));
  gm.set_dsa(spec);
  cm->set_dsa(spec);
  const std::vector<int32_t> ids = reference_ids(gm, 768);

  // Selections of the first window, layer by layer.
  const std::vector<int32_t> win(ids.begin(), ids.begin() + 256);
  std::map<int, std::vector<int32_t>> sel_g, sel_c;
  auto grab = [](std::map<int, std::vector<int32_t>>& into) {
    return [&into](const std::string& name, int layer, const Tensor& t) {
      if (name != "topk") return;
      const Tensor h = t.device() == Device::CPU ? t : t.to(Device::CPU);
      into[layer].assign(h.data<int32_t>(), h.data<int32_t>() + h.numel());
    };
  };
  gm.set_tensor_callback(grab(sel_g));
  cm->set_tensor_callback(grab(sel_c));
  Tensor lg, lc;
  KVCache kg = gm.make_kv(256), kc = cm->make_kv(256);
  gm.forward(win, kg, lg, false);
  cm->forward(win, kc, lc, false);
  gm.set_tensor_callback(nullptr);
  cm->set_tensor_callback(nullptr);
  ASSERT_EQ(sel_g.size(), static_cast<size_t>(L));
  for (int l = 0; l < L; l += 4) {
    ASSERT_EQ(sel_g[l].size(), sel_c[l].size());
    int64_t same = 0, total = 0;
    for (size_t r = 0; r < sel_g[l].size() / 64; ++r) {
      std::vector<int32_t> a(sel_g[l].begin() + r * 64, sel_g[l].begin() + (r + 1) * 64);
      std::vector<int32_t> b(sel_c[l].begin() + r * 64, sel_c[l].begin() + (r + 1) * 64);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      std::vector<int32_t> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      for (int32_t x : both) same += x >= 0;
      for (int32_t x : b) total += x >= 0;
    }
    const double agree = static_cast<double>(same) / static_cast<double>(total);
    std::printf("[ model cuda dsa ] layer %2d: %.4f of the CPU's selected entries also selected on the GPU\n", l, agree);
    EXPECT_GE(agree, 0.98) << "layer " << l;
  }

  const PerplexityResult g = perplexity(gm, ids, 256);
  const PerplexityResult c = perplexity(*cm, ids, 256);
  std::printf("[ model cuda dsa perplexity, k 64, ctx 256, 1/4 ] cuda %.4f  cpu %.4f  ratio %.5f\n", g.ppl, c.ppl,
              g.ppl / c.ppl);
  EXPECT_NEAR(g.ppl / c.ppl, 1.0, 0.02);

  const int64_t n = 160, half = 100;
  KVCache kv1 = gm.make_kv(n), kv2 = gm.make_kv(n);
  Tensor all, one;
  gm.forward(std::span(ids).subspan(0, n), kv1, all, true);
  gm.forward(std::span(ids).subspan(0, half), kv2, one, false);
  double worst = 0;
  for (int64_t t = half; t < n; ++t) {
    gm.forward(std::span(ids).subspan(t, 1), kv2, one, false);
    worst = std::max(worst, worst_logprob_gap(all.data<float>() + t * V, one.data<float>(), 1, V));
  }
  std::printf("[ model cuda dsa decode vs prefill ] worst log-prob gap %.2e nats\n", worst);
  EXPECT_LT(worst, kTol);
}

}  // namespace
}  // namespace ic
