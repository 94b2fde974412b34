// Passkey retrieval: the prompt builder (lengths, depth, where the key is), the keys, and on the
// real model that prefix reuse gives the logits of a full prefill and that exact match is what
// greedy decoding of the key would say.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "model/dsa.h"
#include "model/llama.h"
#include "model_test_util.h"
#include "runtime/passkey.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "test_util.h"

namespace ic {
namespace {

// One token per byte: positions in tokens are positions in the text.
std::vector<int32_t> byte_tokens(std::string_view s) { return {s.begin(), s.end()}; }
std::string bytes_text(std::span<const int32_t> t) { return {t.begin(), t.end()}; }

TEST(Passkey, BuilderLengthsDepthAndKeyPositions) {
  const PasskeyText text;
  const PasskeyBuilder b(byte_tokens, text);
  const int64_t unit = static_cast<int64_t>(text.filler.size());
  ASSERT_EQ(b.filler_unit_tokens(), unit);
  for (int64_t target : {400, 1024, 4096})
    for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      const std::string key = "04711";
      const PasskeyPrompt p = b.build(target, depth, key);
      const int64_t n = static_cast<int64_t>(p.tokens.size());
      EXPECT_LE(n, target);
      EXPECT_GT(n, target - unit) << "target " << target << " depth " << depth;
      // The needle follows round(depth * units) whole filler units.
      ASSERT_GT(p.n_filler_units, 0);
      EXPECT_LE(std::fabs(p.depth() - depth), 0.5 / p.n_filler_units + 1e-12);
      EXPECT_EQ(p.prefix_len, static_cast<int64_t>(text.intro.size()) + p.n_before * unit);
      const std::string all = bytes_text(p.tokens);
      EXPECT_EQ(all.substr(0, text.intro.size()), text.intro);
      EXPECT_EQ(bytes_text({p.tokens.data() + p.prefix_len, static_cast<size_t>(p.needle_end - p.prefix_len)}),
                " The pass key is 04711. Remember it. 04711 is the pass key.");
      EXPECT_EQ(bytes_text({p.tokens.data() + p.key_begin, static_cast<size_t>(p.key_len())}), " 04711");
      EXPECT_EQ(all.substr(p.key_begin - text.question.size(), text.question.size()), text.question);
      // The filler before the needle is exactly n_before units, and the key appears nowhere else
      // but in the needle and the answer.
      EXPECT_EQ(all.find("04711"), static_cast<size_t>(p.prefix_len) + 17);
      // Another key changes nothing before the needle.
      const PasskeyPrompt q = b.build(target, depth, "99999");
      EXPECT_EQ(q.prefix_len, p.prefix_len);
      EXPECT_TRUE(std::equal(p.tokens.begin(), p.tokens.begin() + p.prefix_len, q.tokens.begin()));
    }
  EXPECT_THROW(b.build(100, 0.5, "12345"), Error);  // too short for intro, needle and question
  EXPECT_THROW(b.build(1000, 1.5, "12345"), Error);
  EXPECT_THROW(PasskeyBuilder(byte_tokens, PasskeyText{.needle = "no key here"}), Error);
}

TEST(Passkey, KeysAreFiveDigitsSeededAndVaried) {
  std::set<std::string> seen;
  for (int64_t t = 0; t < 1000; ++t) {
    const std::string k = passkey_key(7, 3, t);
    ASSERT_EQ(k.size(), 5u);
    for (char c : k) ASSERT_TRUE(c >= '0' && c <= '9') << k;
    EXPECT_EQ(k, passkey_key(7, 3, t));
    seen.insert(k);
  }
  EXPECT_GT(seen.size(), 990u);  // 1000 draws from 100000: about 5 collisions expected
  EXPECT_NE(passkey_key(7, 3, 0), passkey_key(8, 3, 0));
  EXPECT_NE(passkey_key(7, 3, 0), passkey_key(7, 4, 0));
}

PasskeyBuilder model_builder(const LlamaModel& m) {
  return PasskeyBuilder([&m](std::string_view t) { return m.tokenizer().encode(t, false); });
}

TEST(Passkey, RealTokenizerLocatesTheKey) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = test::cpu_model(path);
  const PasskeyBuilder b = model_builder(m);
  for (const char* key : {"12345", "00817", "99999"}) {
    const PasskeyPrompt p = b.build(2048, 0.5, key);
    EXPECT_LE(static_cast<int64_t>(p.tokens.size()), 2048);
    EXPECT_GT(static_cast<int64_t>(p.tokens.size()), 2048 - b.filler_unit_tokens());
    EXPECT_EQ(m.tokenizer().decode({p.tokens.data() + p.key_begin, static_cast<size_t>(p.key_len())}),
              std::string(" ") + key);
  }
}

// The last layer's output rows ("l_out", the residual the output head reads) of one forward
// of `tokens` appended to `kv`: F32 [n, dim]. Full-vocabulary logits for every row would cost
// more than the rest of the test; the logits are a fixed function of these rows.
Tensor final_rows(LlamaModel& m, KVCache& kv, std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int last = static_cast<int>(m.config().n_layers - 1);
  Tensor out = Tensor::empty({n, m.config().dim}, DType::F32);
  int64_t filled = 0;
  m.set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) {
    if (name != "l_out" || layer != last) return;
    out.slice_rows(filled, filled + t.dim(0)).copy_from(t.device() == Device::CPU ? t : t.to(Device::CPU));
    filled += t.dim(0);
  });
  Tensor logits;
  m.forward(tokens, kv, logits, false);
  m.set_tensor_callback(nullptr);
  EXPECT_EQ(filled, n);
  return out;
}

void check_prefix_reuse(LlamaModel& m) {
  const PasskeyBuilder b = model_builder(m);
  const PasskeyPrompt first = b.build(150, 0.4, "31415"), p = b.build(150, 0.4, "27182");
  ASSERT_EQ(first.prefix_len, p.prefix_len);
  const int64_t n = static_cast<int64_t>(p.tokens.size()), V = m.config().vocab, D = m.config().dim;
  KVCache full_kv = m.make_kv(n);
  const Tensor want = final_rows(m, full_kv, p.tokens);
  // Prefill the shared prefix, run another trial past it (it leaves its own tokens in the
  // cache), then cut back to the prefix and run the rest of this one.
  KVCache kv = m.make_kv(n + 16);
  Tensor logits;
  m.forward(std::span(p.tokens).first(p.prefix_len), kv, logits, false);
  (void)score_passkey(m, kv, first);
  kv.set_size(p.prefix_len);
  const Tensor got = final_rows(m, kv, std::span(p.tokens).subspan(p.prefix_len));
  // Each row's computation does not depend on how the tokens were split into forward calls
  // (row-wise activation quantisation, per-query attention), so the rows are bitwise equal.
  int64_t differ = 0;
  for (int64_t i = 0; i < got.numel(); ++i) differ += got.data<float>()[i] != want.data<float>()[p.prefix_len * D + i];
  EXPECT_EQ(differ, 0) << "of " << got.numel() << " values";
  // And score_passkey's NLL is that of the full prefill's logits at the key rows.
  std::vector<float> key_logits(static_cast<size_t>(p.key_len() * V));
  m.output_logits(want.slice_rows(p.key_begin - 1, n - 1), key_logits.data());
  double nll = 0;
  for (int64_t i = 0; i < p.key_len(); ++i)
    nll -= log_prob({key_logits.data() + i * V, static_cast<size_t>(V)}, p.tokens[p.key_begin + i]);
  const PasskeyScore s = score_passkey(m, kv, p);
  EXPECT_NEAR(s.nll, nll, 1e-6 * std::max(1.0, nll));
}

TEST(Passkey, PrefixReuseGivesTheFullPrefillLogits) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = test::cpu_model(path);
  m.set_dsa(nullptr);
  check_prefix_reuse(m);
}

TEST(Passkey, PrefixReuseGivesTheFullPrefillLogitsWithDsa) {
  IC_TEST_MODEL_OR_SKIP(path);
  const std::string idx = std::string(IC_SOURCE_DIR) + "/models/indexers/smollm2-h8d64-allF.safetensors";
  if (!std::filesystem::exists(idx)) GTEST_SKIP() << "no indexers at " << idx;
  LlamaModel& m = test::cpu_model(path);
  // k 32 of up to 150 keys, pattern 1/4: sparse attention and shared layers really matter.
  m.set_dsa(std::make_shared<DsaSpec>(load_indexers(idx, m.config().n_layers, m.config().dim,
                                                    LayerPattern::from_freq(m.config().n_layers, 4), 32)));
  check_prefix_reuse(m);
  m.set_dsa(nullptr);
}

TEST(Passkey, ExactMatchIsGreedyDecoding) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = test::cpu_model(path);
  m.set_dsa(nullptr);
  const PasskeyBuilder b = model_builder(m);
  int hits = 0, trials = 0;
  for (const auto& [len, depth] : {std::pair<int64_t, double>{110, 0.0}, {140, 0.5}, {160, 1.0}}) {
    const PasskeyPrompt p = b.build(len, depth, passkey_key(5, len, 0));
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    KVCache kv = m.make_kv(n + 8);
    Tensor logits;
    // Greedy decoding: the prompt up to the key, then key_len steps feeding back the argmax.
    m.forward(std::span(p.tokens).first(p.key_begin), kv, logits, false);
    std::vector<int32_t> out;
    for (int64_t i = 0; i < p.key_len(); ++i) {
      out.push_back(argmax({logits.data<float>(), static_cast<size_t>(m.config().vocab)}));
      m.forward(std::span(out).last(1), kv, logits, false);
    }
    const bool greedy = std::equal(out.begin(), out.end(), p.tokens.begin() + p.key_begin);
    // The cache holds the prefix (and more): score teacher-forced from there.
    const PasskeyScore s = score_passkey(m, kv, p);
    EXPECT_EQ(s.exact, greedy) << "length " << len << " depth " << depth << " key "
                               << m.tokenizer().decode({p.tokens.data() + p.key_begin, (size_t)p.key_len()})
                               << " greedy " << m.tokenizer().decode(out);
    EXPECT_GT(s.nll, 0.0);
    hits += s.exact;
    ++trials;
  }
  // Short prompts: a 135M model finds most keys (so both outcomes are exercised over runs).
  EXPECT_GT(hits, 0) << "of " << trials;
}

TEST(Passkey, RunCountsCellsAndRejectsLongPrompts) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = test::cpu_model(path);
  m.set_dsa(nullptr);
  const PasskeyBuilder b = model_builder(m);
  PasskeyOptions o;
  o.lengths = {100, 130};
  o.depths = {0.0, 1.0};
  o.trials = 2;
  int64_t calls = 0;
  const PasskeyReport r = run_passkey(m, b, o, [&](const PasskeyProgress& p) {
    ++calls;
    EXPECT_LE(p.trials_done, p.trials_total);
  });
  ASSERT_EQ(r.cells.size(), 4u);
  EXPECT_EQ(calls, 8);
  int64_t tokens = 0;
  for (const PasskeyCell& c : r.cells) {
    EXPECT_EQ(c.trials, 2);
    EXPECT_GE(c.accuracy(), 0.0);
    EXPECT_GT(c.mean_nll(), 0.0);
    tokens += c.prefix_len + 2 * (c.prompt_len - c.prefix_len);
  }
  EXPECT_EQ(r.tokens, tokens);
  o.lengths = {m.config().context_max + 1};
  EXPECT_THROW(run_passkey(m, b, o), Error);
}

}  // namespace
}  // namespace ic
