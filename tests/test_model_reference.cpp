// The engine against the independent NumPy forward (scripts/reference_forward.py, float64, written
// from the formulas; the GGUF read with the `gguf` package and tokenized with HF `tokenizers`).
// scripts/test generates the JSON; set IC_REFERENCE_JSON to use another.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "model/llama.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "model_test_util.h"
#include "test_util.h"

namespace ic {
namespace {

// Tolerances, from docs/REFERENCE.md where they are derived and measured:
// - Tight, for the plain f32 reference path: f32 rounding through 30 layers moves log-probs by
//   < 1.1e-4 (measured with the NumPy script in float32 mode); we allow 1e-3 on every checked
//   log-prob and require the same top-1 wherever the reference margin exceeds 1e-3.
// - Statistical, for the fast path, which quantises activations to int8 per 32-block before
//   every matmul (as llama.cpp does). That quantisation acts as fixed-size noise: simulated in
//   NumPy it moves single log-probs by up to 0.58 nats (mean 0.064), flips top-1 only where the
//   reference margin is < 0.8, gives KL < 3e-3 at the last position and +0.12..0.37 % ppl, and
//   two implementations that are not bit-identical differ by that full noise. So the fast path
//   is held to about twice the measured noise: mean |dlogprob| <= 0.15, max <= 1.5, likely
//   tokens (p > 1e-3) at the last position within 0.7, KL <= 1e-2, top-1 equal where the
//   reference margin exceeds 1.5, and perplexity within 0.5 % (the figure the engine promises).
struct Tolerance {
  double max_abs;        // any checked log-prob
  double mean_abs;       // mean over logprob_next
  double likely_abs;     // last position, tokens with reference p > 1e-3
  double kl;             // KL(reference || engine) at the last position
  double top1_margin;    // top-1 must agree where the reference margin exceeds this
};
constexpr Tolerance kTight{1e-3, 1e-4, 1e-3, 1e-5, 1e-3};
constexpr Tolerance kInt8Noise{1.5, 0.15, 0.7, 1e-2, 1.5};
constexpr double kPplRelTol = 0.005;

nlohmann::json load_reference() {
  std::string path;
  if (const char* p = std::getenv("IC_REFERENCE_JSON"); p && *p) path = p;
  else path = std::string(IC_SOURCE_DIR) + "/build/reference.json";
  if (!std::filesystem::exists(path)) return {};
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

#define IC_REFERENCE_OR_SKIP(var)                                                                  \
  const nlohmann::json var = load_reference();                                                     \
  if (var.is_null()) {                                                                             \
    if (::ic::test::model_required()) FAIL() << "IC_REQUIRE_MODEL=1 but no reference JSON (run scripts/test)"; \
    GTEST_SKIP() << "no reference JSON (scripts/reference_forward.py writes it)";                  \
  }

LlamaModel& shared_model(const std::string& path) { return test::cpu_model(path); }

double log_softmax_at(const float* z, int64_t n, int64_t i) { return log_prob({z, static_cast<size_t>(n)}, i); }

// Compare logits [n, V] of one reference prompt's ids against the reference's numbers.
void compare_prompt(const nlohmann::json& p, const Tensor& logits, int64_t V, const Tolerance& tol) {
  const auto ids = p["ids"].get<std::vector<int32_t>>();
  const auto top1 = p["top1"].get<std::vector<int32_t>>();
  const auto lp_next = p["logprob_next"].get<std::vector<double>>();
  const auto last = p["last_logprobs"].get<std::vector<double>>();
  const int64_t n = static_cast<int64_t>(ids.size());
  double sum = 0, worst = 0;
  for (int64_t t = 0; t + 1 < n; ++t) {
    const double d = std::fabs(log_softmax_at(logits.data<float>() + t * V, V, ids[t + 1]) - lp_next[t]);
    sum += d;
    worst = std::max(worst, d);
  }
  if (n > 1) {
    EXPECT_LE(sum / (n - 1), tol.mean_abs) << "mean |d logprob_next|";
    EXPECT_LE(worst, tol.max_abs) << "max |d logprob_next|";
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* z = logits.data<float>() + t * V;
    const int32_t mine = argmax({z, static_cast<size_t>(V)});
    if (mine == top1[t]) continue;
    // The reference's margin between its top-1 and our top-1, from its own log-probs when known.
    const double margin = t == n - 1 ? last[top1[t]] - last[mine] : log_softmax_at(z, V, top1[t]) - log_softmax_at(z, V, mine);
    EXPECT_LE(margin, tol.top1_margin) << "position " << t << ": top-1 " << mine << ", reference " << top1[t];
  }
  const float* z = logits.data<float>() + (n - 1) * V;
  double zmax = z[0], zsum = 0;
  for (int64_t v = 0; v < V; ++v) zmax = std::max(zmax, static_cast<double>(z[v]));
  for (int64_t v = 0; v < V; ++v) zsum += std::exp(z[v] - zmax);
  const double log_norm = zmax + std::log(zsum);
  double kl = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double mine = z[v] - log_norm;
    if (last[v] > std::log(1e-3)) EXPECT_NEAR(mine, last[v], tol.likely_abs) << "token " << v;
    kl += std::exp(last[v]) * (last[v] - mine);
  }
  // last_logprobs carry 6 decimals: their rounding alone gives KL ~1e-7.
  EXPECT_LE(kl, tol.kl + 1e-6) << "KL(reference || engine) at the last position";
  EXPECT_EQ(argmax({z, static_cast<size_t>(V)}), top1[n - 1]) << "the next token after the prompt";
}

TEST(ModelVsNumpy, TokenizerAgreesOnPromptIds) {
  IC_TEST_MODEL_OR_SKIP(path);
  IC_REFERENCE_OR_SKIP(ref);
  LlamaModel& m = shared_model(path);
  for (const auto& p : ref["prompts"])
    EXPECT_EQ(m.tokenizer().encode(p["text"].get<std::string>(), true), p["ids"].get<std::vector<int32_t>>());
}

TEST(ModelVsNumpy, FastForwardLogProbs) {
  IC_TEST_MODEL_OR_SKIP(path);
  IC_REFERENCE_OR_SKIP(ref);
  LlamaModel& m = shared_model(path);
  for (const auto& p : ref["prompts"]) {
    SCOPED_TRACE(p["text"].get<std::string>().substr(0, 40));
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    KVCache kv(m.config(), static_cast<int64_t>(ids.size()), Device::CPU);
    Tensor logits;
    m.forward(ids, kv, logits, true);
    compare_prompt(p, logits, m.config().vocab, kInt8Noise);
  }
}

TEST(ModelVsNumpy, PlainReferenceLogProbs) {
  IC_TEST_MODEL_OR_SKIP(path);
  IC_REFERENCE_OR_SKIP(ref);
  LlamaModel& m = shared_model(path);
  const auto& p = ref["prompts"][0];  // the reference path is slow: one short prompt
  const Tensor logits = llama_reference_forward(m, p["ids"].get<std::vector<int32_t>>());
  compare_prompt(p, logits, m.config().vocab, kTight);
}

TEST(ModelVsNumpy, PerplexityWithinHalfPercent) {
  IC_TEST_MODEL_OR_SKIP(path);
  IC_REFERENCE_OR_SKIP(ref);
  LlamaModel& m = shared_model(path);
  const auto& r = ref["perplexity"];
  const auto ids = r["ids"].get<std::vector<int32_t>>();
  const PerplexityResult mine = perplexity(m, ids, r["ctx"].get<int64_t>());
  EXPECT_EQ(mine.n_scored, r["n_scored"].get<int64_t>());
  const double ppl = r["ppl"].get<double>();
  EXPECT_NEAR(mine.ppl / ppl, 1.0, kPplRelTol) << "engine " << mine.ppl << " reference " << ppl;
  // Per-token: the mean absolute NLL difference is a far tighter check than the ppl ratio.
  const auto nll = r["nll"].get<std::vector<double>>();
  ASSERT_EQ(nll.size(), mine.nll.size());
  double mad = 0;
  for (size_t i = 0; i < nll.size(); ++i) mad += std::fabs(nll[i] - mine.nll[i]);
  EXPECT_LE(mad / nll.size(), kInt8Noise.mean_abs);
}

}  // namespace
}  // namespace ic
