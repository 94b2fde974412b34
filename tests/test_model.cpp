// Whole-model checks on the real SmolLM2 GGUF: the fast forward against the plain C++ reference,
// prefill against token-by-token decode, and clear errors for bad requests.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/llama.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "model_test_util.h"
#include "test_util.h"

namespace ic {
namespace {

using test::log_softmax;
LlamaModel& shared_model(const std::string& path) { return test::cpu_model(path); }

TEST(Model, ConfigMatchesSmolLM2) {
  IC_TEST_MODEL_OR_SKIP(path);
  const LlamaConfig& c = shared_model(path).config();
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.ffn_dim, 1536);
  EXPECT_EQ(c.vocab, 49152);
  EXPECT_EQ(c.context_max, 8192);
}

// The fast path (int8 activations) against the plain f32 reference, held at the int8 noise
// level that docs/REFERENCE.md measures (see test::expect_close_at_int8_noise).
TEST(Model, FastForwardMatchesPlainReference) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = shared_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("The capital of France is Paris, and the capital of Italy is");
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab;
  const Tensor ref = llama_reference_forward(m, ids);
  KVCache kv(m.config(), n, Device::CPU);
  Tensor fast;
  m.forward(ids, kv, fast, true);
  test::expect_close_at_int8_noise(ref.data<float>(), fast.data<float>(), n, V);
  EXPECT_EQ(m.tokenizer().decode(std::vector<int32_t>{argmax({fast.data<float>() + (n - 1) * V, (size_t)V})}), " Rome");
}

// Prefill and token-by-token decode sum attention in different orders (tiled online softmax
// against a per-query two-pass softmax), which the int8 activation rounding amplifies into the
// full quantisation noise: they are held at that noise level; a prefix through the same path is
// bitwise equal.
TEST(Model, PrefillMatchesTokenByTokenDecode) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = shared_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("One, two, three, four, five, six, seven, eight, nine, ten");
  const int64_t n = static_cast<int64_t>(ids.size()), V = m.config().vocab;
  KVCache kv1(m.config(), n, Device::CPU), kv2(m.config(), n, Device::CPU);
  Tensor all, one;
  m.forward(ids, kv1, all, true);
  const int64_t half = n / 2;  // half the prompt as a prefill, the rest one token at a time
  m.forward(std::span(ids).subspan(0, half), kv2, one, true);
  for (int64_t t = 0; t < half; ++t)  // the same prefix through the same path: bitwise equal
    for (int64_t v = 0; v < V; ++v) ASSERT_EQ(all.data<float>()[t * V + v], one.data<float>()[t * V + v]);
  Tensor decoded = Tensor::empty({n - half, V}, DType::F32);
  for (int64_t t = half; t < n; ++t) {
    m.forward(std::span(ids).subspan(t, 1), kv2, one, false);
    std::copy(one.data<float>(), one.data<float>() + V, decoded.data<float>() + (t - half) * V);
  }
  test::expect_close_at_int8_noise(all.data<float>() + half * V, decoded.data<float>(), n - half, V);
}

// Same input, same answer: the search and the trainer rely on it. Two runs of a prefill and of a
// decode step, and one thread against two, must agree bit for bit.
TEST(Model, ForwardIsDeterministic) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = shared_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("Determinism matters for the layer search.");
  const int64_t n = static_cast<int64_t>(ids.size());
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    KVCache kv(m.config(), n + 1, Device::CPU);
    Tensor a, b;
    m.forward(ids, kv, a, true);
    const int32_t next[1] = {ids[0]};
    m.forward(next, kv, b, false);
    std::vector<float> out(a.data<float>(), a.data<float>() + a.numel());
    out.insert(out.end(), b.data<float>(), b.data<float>() + b.numel());
    return out;
  };
  const int restore = omp_get_max_threads();
  const auto one = run(1), again = run(1), two = run(2);
  omp_set_num_threads(restore);
  EXPECT_TRUE(one == again);
  EXPECT_TRUE(one == two);
}

TEST(Model, BadRequestsGiveClearErrors) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = shared_model(path);
  KVCache kv(m.config(), 4, Device::CPU);
  Tensor logits;
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(m.forward(five, kv, logits, false), Error);  // past the cache capacity
  const std::vector<int32_t> bad = {1, 49152};
  try {
    m.forward(bad, kv, logits, false);
    FAIL() << "an out-of-vocabulary id must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  std::vector<int32_t> long_text(10, 1);
  EXPECT_THROW(perplexity(m, long_text, 9000), Error);  // context past the model's 8192
  EXPECT_THROW(LlamaModel::load("/nonexistent.gguf"), Error);
}

}  // namespace
}  // namespace ic
