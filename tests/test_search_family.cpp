// The greedy search is written against the Model interface only, so it runs unchanged on the DSA
// family: on HF's tiny GLM-MoE-DSA checkpoint (MLA + MoE + its own indexers, tests/data/hf), the
// search with prefix reuse equals the plain search of full passes bit for bit, as on the llama
// family (test_search.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <set>

#include "core/error.h"
#include "indexcache/search.h"
#include "model/load_model.h"

namespace ic {
namespace {

std::string checkpoint(const char* name) { return std::string(IC_SOURCE_DIR) + "/tests/data/hf/" + name; }

std::vector<std::vector<int32_t>> random_windows(uint64_t seed, int64_t vocab, int n, int len) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> w(static_cast<size_t>(n));
  for (auto& win : w)
    for (int i = 0; i < len; ++i) win.push_back(static_cast<int32_t>(rng() % vocab));
  return w;
}

TEST(SearchFamily, PrefixReuseEqualsFullPassesOnAnMlaMoeCheckpoint) {
  const std::string dir = checkpoint("glm_moe_dsa-tiny");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is absent";
  LoadOptions opt;
  opt.pattern = [](int64_t n) { return LayerPattern::all_full(n); };
  const auto m = load_model(dir, opt);
  const int64_t N = m->info().n_layers;
  ASSERT_GE(N, 3);
  ASSERT_GT(m->topk(), 0);
  // Longer than top-k, so the selections matter; unequal lengths; several chunks per window.
  auto windows = random_windows(3, m->info().vocab, 3, 5 * m->topk());
  windows[2].resize(3 * m->topk() + 1);
  SearchConfig cfg;
  cfg.keep = 1;
  cfg.chunk = 13;
  cfg.logit_rows = 5;
  const SearchResult fast = greedy_search(*m, windows, cfg);
  const SearchResult ref = greedy_search_reference(*m, windows, 1);
  ASSERT_EQ(fast.trajectory.size(), static_cast<size_t>(N - 1));
  ASSERT_EQ(ref.trajectory.size(), fast.trajectory.size());
  EXPECT_EQ(fast.all_f_loss, ref.all_f_loss);
  for (size_t s = 0; s < fast.trajectory.size(); ++s) {
    EXPECT_EQ(fast.trajectory[s].layer, ref.trajectory[s].layer) << "step " << s;
    EXPECT_EQ(fast.trajectory[s].loss, ref.trajectory[s].loss) << "step " << s;
    EXPECT_EQ(fast.trajectory[s].candidates, ref.trajectory[s].candidates) << "step " << s;
  }
  EXPECT_EQ(fast.cost.refresh_mismatches, 0);
  std::set<double> distinct;
  for (const auto& [layer, loss] : fast.trajectory[0].candidates) distinct.insert(loss);
  EXPECT_GE(distinct.size(), 2u) << "the candidates' losses do not depend on the pattern: the test could not fail";
  EXPECT_EQ(m->pattern()->n_full(), N);  // the model keeps its all-F pattern
}

TEST(SearchFamily, NeedsIndexersOnEveryLayer) {
  const std::string dir = checkpoint("glm_moe_dsa-tiny");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " is absent";
  LoadOptions opt;
  opt.pattern = [](int64_t n) { return LayerPattern::from_freq(n, 2); };
  const auto m = load_model(dir, opt);
  const auto windows = random_windows(1, m->info().vocab, 1, 12);
  try {
    greedy_search(*m, windows, SearchConfig{});
    FAIL() << "a search from a pattern that is not all F ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all-F"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ic
