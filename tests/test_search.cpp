// The greedy IndexCache pattern search (src/indexcache/search.h) on a tiny random llama model
// written to a GGUF here, with random lightning indexers on every layer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "indexcache/search.h"
#include "indexcache/search_report.h"
#include "io/gguf_writer.h"
#include "model/dsa.h"
#include "model/llama.h"
#include "test_util.h"

namespace ic {
namespace {

constexpr int64_t kLayers = 6, kDim = 64, kHeads = 4, kKvHeads = 2, kFfn = 128, kVocab = 256;

Tensor random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, float std) {
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  std::normal_distribution<float> nd(0.0f, std);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

Tensor ones(int64_t n) {
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = 1.0f;
  return t;
}

// Writes a random F32 llama model; layer `dead_attention` (if >= 0) gets a zero attention output
// projection, so its attention, and with it its selection, has no effect on anything.
std::string write_tiny_model(uint64_t seed, int64_t dead_attention = -1) {
  std::mt19937_64 rng(seed);
  gguf::Writer w;
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.block_count", kLayers);
  w.add_uint32("llama.embedding_length", kDim);
  w.add_uint32("llama.attention.head_count", kHeads);
  w.add_uint32("llama.attention.head_count_kv", kKvHeads);
  w.add_uint32("llama.feed_forward_length", kFfn);
  w.add_uint32("llama.context_length", 256);
  w.add_float32("llama.rope.freq_base", 10000.0f);
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "gpt2");
  w.add_string_array("tokenizer.ggml.tokens", test::byte_level_tokens());
  const float s_in = 1.0f / std::sqrt(static_cast<float>(kDim)), s_ffn = 1.0f / std::sqrt(static_cast<float>(kFfn));
  const int64_t kv = kKvHeads * (kDim / kHeads);
  w.add_tensor("token_embd.weight", random_matrix(rng, kVocab, kDim, 0.5f));
  w.add_tensor("output_norm.weight", ones(kDim));
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor(p + "attn_norm.weight", ones(kDim));
    w.add_tensor(p + "ffn_norm.weight", ones(kDim));
    // Large query/key weights make attention sharp, so which keys are selected matters.
    w.add_tensor(p + "attn_q.weight", random_matrix(rng, kDim, kDim, 3 * s_in));
    w.add_tensor(p + "attn_k.weight", random_matrix(rng, kv, kDim, 3 * s_in));
    w.add_tensor(p + "attn_v.weight", random_matrix(rng, kv, kDim, s_in));
    w.add_tensor(p + "attn_output.weight", random_matrix(rng, kDim, kDim, l == dead_attention ? 0.0f : s_in));
    w.add_tensor(p + "ffn_gate.weight", random_matrix(rng, kFfn, kDim, s_in));
    w.add_tensor(p + "ffn_up.weight", random_matrix(rng, kFfn, kDim, s_in));
    w.add_tensor(p + "ffn_down.weight", random_matrix(rng, kDim, kFfn, s_ffn));
  }
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("ic_test_search_" + std::to_string(seed) + "_" + std::to_string(dead_attention) + "_" +
                             std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + ".gguf"))
                               .string();
  w.write(path);
  return path;
}

std::shared_ptr<DsaSpec> random_all_f_spec(uint64_t seed, int64_t topk) {
  auto spec = std::make_shared<DsaSpec>();
  spec->config.n_heads = 2;
  spec->config.head_dim = 16;
  spec->config.rope_dim = 16;
  spec->config.topk = topk;
  spec->pattern = LayerPattern::all_full(kLayers);
  for (int64_t l = 0; l < kLayers; ++l) spec->indexers.push_back(IndexerWeights::random(spec->config, kDim, seed + l));
  return spec;
}

// The model with random indexers on every layer; the GGUF is removed once loaded (mapped).
std::unique_ptr<LlamaModel> tiny_dsa_model(uint64_t seed, int64_t topk, int64_t dead_attention = -1) {
  const std::string path = write_tiny_model(seed, dead_attention);
  auto m = LlamaModel::load(path);
  std::filesystem::remove(path);
  m->set_dsa(random_all_f_spec(seed * 31 + 7, topk));
  return m;
}

std::vector<std::vector<int32_t>> random_windows(uint64_t seed, int n, int len) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> w(static_cast<size_t>(n));
  for (auto& win : w)
    for (int i = 0; i < len; ++i) win.push_back(static_cast<int32_t>(rng() % kVocab));
  return w;
}

// Windows sampled from the model itself (temperature 1), so the model as it is (all F) is the
// distribution the text comes from: in expectation every change to it raises the loss.
std::vector<std::vector<int32_t>> sampled_windows(LlamaModel& m, uint64_t seed, int n, int len) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (int w = 0; w < n; ++w) {
    KVCache kv = m.make_kv(len);
    Tensor logits;
    std::vector<int32_t> win{static_cast<int32_t>(rng() % kVocab)};
    while (static_cast<int>(win.size()) < len) {
      m.forward(std::span<const int32_t>(&win.back(), 1), kv, logits, false);
      const float* z = logits.data<float>();
      double mx = z[0], sum = 0;
      for (int64_t v = 0; v < kVocab; ++v) mx = std::max(mx, static_cast<double>(z[v]));
      std::vector<double> p(kVocab);
      for (int64_t v = 0; v < kVocab; ++v) sum += p[v] = std::exp(z[v] - mx);
      double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
      int32_t tok = kVocab - 1;
      for (int64_t v = 0; v < kVocab; ++v)
        if ((u -= p[v]) <= 0) {
          tok = static_cast<int32_t>(v);
          break;
        }
      win.push_back(tok);
    }
    out.push_back(std::move(win));
  }
  return out;
}

void expect_same_trajectory(const SearchResult& a, const SearchResult& b) {
  EXPECT_EQ(a.all_f_loss, b.all_f_loss);
  ASSERT_EQ(a.trajectory.size(), b.trajectory.size());
  for (size_t s = 0; s < a.trajectory.size(); ++s) {
    const SearchStep &x = a.trajectory[s], &y = b.trajectory[s];
    EXPECT_EQ(x.layer, y.layer) << "step " << s + 1;
    EXPECT_EQ(x.loss, y.loss) << "step " << s + 1;
    EXPECT_EQ(x.pattern.str(), y.pattern.str()) << "step " << s + 1;
    ASSERT_EQ(x.candidates.size(), y.candidates.size()) << "step " << s + 1;
    for (size_t c = 0; c < x.candidates.size(); ++c) {
      EXPECT_EQ(x.candidates[c].first, y.candidates[c].first) << "step " << s + 1;
      // The prefix-reusing search runs the very same operations on the very same rows as the full
      // pass (row results do not depend on how rows are batched), so the losses agree bit for bit.
      EXPECT_EQ(x.candidates[c].second, y.candidates[c].second)
          << "step " << s + 1 << ", candidate layer " << x.candidates[c].first;
    }
  }
}

TEST(Search, KeepCounts) {
  EXPECT_EQ(keep_count(30, 2), 15);
  EXPECT_EQ(keep_count(30, 4), 8);
  EXPECT_EQ(keep_count(30, 8), 4);
  EXPECT_EQ(keep_count(47, 4), 12);
  EXPECT_EQ(block_starts(30, 2), (std::vector<int64_t>{0, 15}));
  EXPECT_EQ(block_starts(10, 3), (std::vector<int64_t>{0, 3, 6}));
}

// Every candidate loss of every step, computed from cached prefixes, equals the loss of plain
// full model.forward passes with that pattern, and the flips equal a brute-force greedy's.
TEST(Search, PrefixReuseEqualsFullPasses) {
  auto m = tiny_dsa_model(11, 6);
  // Windows of unequal lengths, cut into several chunks (and odd logit row blocks) by the search
  // but run in one piece by the reference.
  auto windows = random_windows(5, 3, 40);
  windows[1].resize(29);
  SearchConfig cfg;
  cfg.keep = 1;
  cfg.chunk = 16;
  cfg.logit_rows = 7;
  const SearchResult fast = greedy_search(*m, windows, cfg);
  const SearchResult ref = greedy_search_reference(*m, windows, 1);
  ASSERT_EQ(fast.trajectory.size(), static_cast<size_t>(kLayers - 1));
  expect_same_trajectory(fast, ref);
  EXPECT_EQ(fast.cost.refresh_mismatches, 0);
  // The losses must actually depend on the pattern, or this test could not fail.
  std::set<double> distinct;
  for (const auto& [layer, loss] : fast.trajectory[0].candidates) distinct.insert(loss);
  EXPECT_GE(distinct.size(), 3u);
  // Each committed loss is the measured loss of its pattern.
  for (const SearchStep& s : fast.trajectory) EXPECT_EQ(s.loss, pattern_nll(*m, windows, s.pattern));
  // The model keeps its all-F spec.
  EXPECT_EQ(m->dsa()->pattern.n_full(), kLayers);

  // Nested trajectory, layer 0 always F, and the cost: all candidates of each step, and fewer
  // layer evaluations than full passes.
  for (size_t s = 1; s < fast.trajectory.size(); ++s)
    for (int64_t l = 0; l < kLayers; ++l)
      if (fast.trajectory[s].pattern.is_full(l)) EXPECT_TRUE(fast.trajectory[s - 1].pattern.is_full(l));
  EXPECT_EQ(fast.trajectory.back().pattern.str(), "FSSSSS");
  EXPECT_EQ(fast.cost.candidates, kLayers * (kLayers - 1) / 2);
  EXPECT_EQ(fast.cost.naive_passes, 1 + kLayers * (kLayers - 1) / 2);
  EXPECT_EQ(fast.cost.naive_layer_evals, fast.cost.naive_passes * kLayers * 3);
  EXPECT_LT(fast.cost.layer_evals, fast.cost.naive_layer_evals);
  EXPECT_EQ(fast.pattern_with(kLayers - 2).str(), fast.trajectory[1].pattern.str());
  EXPECT_THROW(ref.pattern_with(0), Error);
}

// Layer 3's attention output is zero, so its selection changes nothing: flipping it leaves the
// loss exactly at the all-F loss, while (on text sampled from the all-F model) every other flip
// raises it. The search must flip layer 3 first.
TEST(Search, FlipThatChangesNothingIsChosenFirst) {
  auto m = tiny_dsa_model(23, 4, /*dead_attention=*/3);
  const auto windows = sampled_windows(*m, 9, 4, 48);
  SearchConfig cfg;
  cfg.keep = kLayers - 1;
  const SearchResult r = greedy_search(*m, windows, cfg);
  ASSERT_EQ(r.trajectory.size(), 1u);
  EXPECT_EQ(r.trajectory[0].layer, 3);
  EXPECT_EQ(r.trajectory[0].loss, r.all_f_loss);
  for (const auto& [layer, loss] : r.trajectory[0].candidates)
    if (layer != 3) EXPECT_GT(loss, r.all_f_loss) << "layer " << layer;
}

TEST(Search, Deterministic) {
  auto m = tiny_dsa_model(5, 5);
  const auto windows = random_windows(8, 2, 33);
  SearchConfig cfg;
  cfg.keep = 2;
  const SearchResult a = greedy_search(*m, windows, cfg);
  const SearchResult b = greedy_search(*m, windows, cfg);
  expect_same_trajectory(a, b);
  // The chunking is a work size only.
  cfg.chunk = 5;
  expect_same_trajectory(a, greedy_search(*m, windows, cfg));
}

TEST(Search, LazyAndBlocks) {
  auto m = tiny_dsa_model(17, 6);
  const auto windows = random_windows(3, 2, 40);
  SearchConfig exact_cfg;
  exact_cfg.keep = 1;
  const SearchResult exact = greedy_search(*m, windows, exact_cfg);

  SearchConfig lazy_cfg = exact_cfg;
  lazy_cfg.lazy = true;
  const SearchResult lazy = greedy_search(*m, windows, lazy_cfg);
  ASSERT_EQ(lazy.trajectory.size(), exact.trajectory.size());
  EXPECT_EQ(lazy.trajectory[0].layer, exact.trajectory[0].layer);  // step 1 evaluates everything
  EXPECT_LE(lazy.cost.candidates, exact.cost.candidates);
  for (const SearchStep& s : lazy.trajectory) EXPECT_EQ(s.loss, pattern_nll(*m, windows, s.pattern));

  SearchConfig blocks_cfg;
  blocks_cfg.blocks = 2;  // blocks start at layers 0 and 3
  blocks_cfg.keep = 2;
  const SearchResult blocks = greedy_search(*m, windows, blocks_cfg);
  ASSERT_EQ(blocks.trajectory.size(), static_cast<size_t>(kLayers - 2));
  EXPECT_EQ(blocks.trajectory.back().pattern.str(), "FSSFSS");
  // One flip per block per step: steps 1 and 2 each flip one layer of each block.
  for (size_t i = 0; i < blocks.trajectory.size(); ++i) EXPECT_EQ(blocks.trajectory[i].step, 1 + (int64_t)i / 2);
  for (int64_t step = 1; step <= 2; ++step) {
    int in_first = 0;
    for (const SearchStep& s : blocks.trajectory)
      if (s.step == step) in_first += s.layer < 3;
    EXPECT_EQ(in_first, 1) << "step " << step;
  }
  for (const SearchStep& s : blocks.trajectory) EXPECT_EQ(s.loss, pattern_nll(*m, windows, s.pattern));
}

TEST(Search, Errors) {
  auto m = tiny_dsa_model(3, 4);
  const auto windows = random_windows(1, 1, 16);
  SearchConfig cfg;
  cfg.keep = kLayers + 1;
  EXPECT_THROW(greedy_search(*m, windows, cfg), Error);
  cfg.keep = -1;
  EXPECT_THROW(greedy_search(*m, windows, cfg), Error);
  cfg.keep = 2;
  EXPECT_THROW(greedy_search(*m, {}, cfg), Error);
  EXPECT_THROW(greedy_search(*m, {{5}}, cfg), Error);  // one token predicts nothing
  cfg.lazy = true;
  cfg.blocks = 2;
  EXPECT_THROW(greedy_search(*m, windows, cfg), Error);
  cfg.lazy = false;
  cfg.blocks = 3;  // keep 2 < 3 block starts
  EXPECT_THROW(greedy_search(*m, windows, cfg), Error);
  cfg.blocks = 1;
  EXPECT_THROW(greedy_search_reference(*m, windows, kLayers + 1), Error);

  // A spec that is not all F.
  auto half = std::make_shared<DsaSpec>(*m->dsa());
  half->pattern = LayerPattern::from_freq(kLayers, 2);
  m->set_dsa(half);
  try {
    greedy_search(*m, windows, cfg);
    ADD_FAILURE() << "a non-all-F spec was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("FSFSFS"), std::string::npos) << e.what();
  }
  // A dense model.
  m->set_dsa(nullptr);
  EXPECT_THROW(greedy_search(*m, windows, cfg), Error);
}

TEST(SearchReport, LossCurveSvgHasEveryPointAndRejectsOtherJson) {
  nlohmann::json j = {{"all_f_loss", 3.5}, {"dense_loss", 3.4},
                      {"config", {{"n_layers", 6}, {"topk", 8}, {"windows", 1}, {"ctx", 64}}},
                      {"trajectory", nlohmann::json::array()}};
  for (int f = 5; f >= 2; --f) j["trajectory"].push_back({{"n_full", f}, {"loss", 3.5 + 0.01 * (6 - f)}});
  const std::string svg = search_loss_curve_svg(j);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  for (const char* name : {"greedy search (measured)", "all F (DSA)", "dense", "F layers kept (of 6)"})
    EXPECT_NE(svg.find(name), std::string::npos) << name;
  EXPECT_THROW(search_loss_curve_svg(nlohmann::json::object()), Error);
  j["trajectory"] = nlohmann::json::array();
  EXPECT_THROW(search_loss_curve_svg(j), Error);
}

// Found making fuzz_search_json's seed: search-plot failed on any search run without --dense (it
// writes "dense_loss": null), and fields of the wrong type threw nlohmann's type_error, naming
// neither the file nor the field. The search JSON is fuzz/corpus/search_json/glm_moe_dsa-tiny-search.json.
TEST(SearchReport, LossCurveSvgTakesNullDenseLossAndNamesBadFields) {
  nlohmann::json j = {{"all_f_loss", 3.5}, {"dense_loss", nullptr}, {"config", {{"n_layers", 4}}},
                      {"trajectory", {{{"n_full", 3}, {"loss", 3.6}}, {{"n_full", 2}, {"loss", 3.7}}}}};
  const std::string svg = search_loss_curve_svg(j, "run.json");
  EXPECT_NE(svg.find("all F (DSA)"), std::string::npos);
  EXPECT_EQ(svg.find(">dense<"), std::string::npos);
  nlohmann::json bad = j;
  bad["trajectory"][1]["loss"] = "3.7";
  EXPECT_IC_ERROR(search_loss_curve_svg(bad, "run.json"), "run.json: trajectory[1].loss is string, not a number");
  bad = j;
  bad["config"]["n_layers"] = 1e300;
  EXPECT_IC_ERROR(search_loss_curve_svg(bad, "run.json"), "config.n_layers");
  bad = j;
  bad["dense_loss"] = "x";
  EXPECT_IC_ERROR(search_loss_curve_svg(bad, "run.json"), "dense_loss is string");
  bad = j;
  bad["trajectory"] = 7;
  EXPECT_IC_ERROR(search_loss_curve_svg(bad, "run.json"), "trajectory is number, not an array");
  // Losses 16 apart at 1e17: a tick step below the doubles' spacing there once looped forever.
  bad = j;
  bad["trajectory"][0]["loss"] = 1e17;
  bad["trajectory"][1]["loss"] = 1e17 + 16;
  bad["all_f_loss"] = 1e17;
  EXPECT_NE(search_loss_curve_svg(bad, "run.json").find("</svg>"), std::string::npos);
}

}  // namespace
}  // namespace ic
