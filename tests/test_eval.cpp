// indexcache eval / overlap building blocks: Jaccard overlap of top-k sets, configuration specs,
// the SVG writers (parsed back as XML), and top-k capture on the real model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "indexcache/eval_config.h"
#include "indexcache/overlap.h"
#include "io/svg.h"
#include "model/llama.h"
#include "model_test_util.h"
#include "test_util.h"

namespace ic {
namespace {

double jaccard_reference(std::span<const int32_t> a, std::span<const int32_t> b) {
  std::set<int32_t> sa, sb, u;
  for (int32_t v : a)
    if (v >= 0) sa.insert(v), u.insert(v);
  for (int32_t v : b)
    if (v >= 0) sb.insert(v), u.insert(v);
  if (u.empty()) return 1.0;
  int64_t inter = 0;
  for (int32_t v : sa) inter += sb.count(v);
  return static_cast<double>(inter) / static_cast<double>(u.size());
}

TEST(Overlap, JaccardOnConstructedSets) {
  const std::vector<int32_t> a{1, 2, 3}, b{2, 3, 4}, c{7, 8, 9}, with_none{3, -1, 2, -1, 1};
  EXPECT_DOUBLE_EQ(jaccard(a, b), 0.5);          // {2,3} / {1,2,3,4}
  EXPECT_DOUBLE_EQ(jaccard(a, c), 0.0);
  EXPECT_DOUBLE_EQ(jaccard(a, with_none), 1.0);  // -1 is no token; order does not matter
  EXPECT_DOUBLE_EQ(jaccard(std::vector<int32_t>{-1, -1}, std::vector<int32_t>{-1}), 1.0);
  EXPECT_DOUBLE_EQ(jaccard(std::vector<int32_t>{5, 5, 6}, std::vector<int32_t>{5}), 0.5);
  std::mt19937 rng(std::random_device{}());
  for (int rep = 0; rep < 200; ++rep) {
    std::uniform_int_distribution<int32_t> v(-1, 40);
    std::vector<int32_t> x(16), y(16);
    for (auto& e : x) e = v(rng);
    for (auto& e : y) e = v(rng);
    EXPECT_DOUBLE_EQ(jaccard(x, y), jaccard_reference(x, y));
  }
}

Tensor rows(const std::vector<std::vector<int32_t>>& r) {
  Tensor t = Tensor::empty({static_cast<int64_t>(r.size()), static_cast<int64_t>(r[0].size())}, DType::I32);
  for (size_t i = 0; i < r.size(); ++i) std::copy(r[i].begin(), r[i].end(), t.data<int32_t>() + i * r[0].size());
  return t;
}

TEST(Overlap, LayerMatrixAveragesRowsFromMinPosition) {
  // Rows 0-1 are before min_position 2 and must not count (they disagree everywhere).
  const Tensor l0 = rows({{0, -1}, {9, 9}, {0, 1}, {1, 2}, {0, 3}});
  const Tensor l1 = rows({{5, -1}, {8, 7}, {0, 1}, {1, 2}, {0, 3}});  // = l0 from row 2
  const Tensor l2 = rows({{0, -1}, {9, 9}, {0, 2}, {1, 2}, {4, 2}});  // 1/3, 1, 0
  const OverlapMatrix m = layer_overlap({l0, l1, l2}, 2);
  EXPECT_EQ(m.rows, 3);
  EXPECT_DOUBLE_EQ(m.at(0, 1), 1.0);
  EXPECT_DOUBLE_EQ(m.at(0, 2), (1.0 / 3 + 1.0 + 0.0) / 3);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(m.at(i, i), 1.0);
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(m.at(i, j), m.at(j, i));
  }
  EXPECT_THROW(layer_overlap({l0, l1}, 5), Error);
  EXPECT_THROW(layer_overlap({l0, rows({{1, 2, 3}})}, 0), Error);
}

TEST(EvalConfig, ParsesEveryForm) {
  EvalConfig c = EvalConfig::parse("base=dense");
  EXPECT_EQ(c.name, "base");
  EXPECT_TRUE(c.dense);
  c = EvalConfig::parse("dsa=models/x.safetensors");
  EXPECT_FALSE(c.dense);
  EXPECT_EQ(c.indexers, "models/x.safetensors");
  EXPECT_EQ(c.pattern.kind, PatternChoice::Kind::kFile);
  EXPECT_FALSE(c.pattern.resolve(8).has_value());
  c = EvalConfig::parse("p=x.safetensors@FSFS_SSSS");
  EXPECT_EQ(c.pattern.resolve(8)->str(), "FSFSSSSS");
  c = EvalConfig::parse("q=x.safetensors@freq=4");
  EXPECT_EQ(c.pattern.resolve(8)->str(), "FSSSFSSS");
  c = EvalConfig::parse("q=x.safetensors@freq=2,offset=3");
  EXPECT_EQ(c.pattern.resolve(8)->str(), LayerPattern::from_freq(8, 2, 3).str());
  const std::string json = ::testing::TempDir() + "/search_result.json";
  std::ofstream(json) << R"({"patterns": {"1/2": "FSFSFSFS", "1/4": "FSSSFSSS"}, "loss": [1, 2]})";
  c = EvalConfig::parse("s=x.safetensors@search=" + json + ":1/4");
  EXPECT_EQ(c.pattern.search_key, "1/4");
  EXPECT_EQ(c.pattern.resolve(8)->str(), "FSSSFSSS");
}

using test::expect_error;

TEST(EvalConfig, ClearErrors) {
  expect_error([] { EvalConfig::parse("dense"); }, "expected NAME=SPEC");
  expect_error([] { EvalConfig::parse("=dense"); }, "name before '=' is empty");
  expect_error([] { EvalConfig::parse("a="); }, "spec after '=' is empty");
  expect_error([] { EvalConfig::parse("a=@FS"); }, "no indexer file");
  expect_error([] { EvalConfig::parse("a=x.st@"); }, "empty pattern");
  expect_error([] { EvalConfig::parse("a=x.st@freq=four"); }, "is not an integer");
  expect_error([] { EvalConfig::parse("a=x.st@freq=4,stride=2"); }, "only ',offset=M'");
  expect_error([] { EvalConfig::parse("a=x.st@freq=0"); }, "must be >= 1");
  expect_error([] { EvalConfig::parse("a=x.st@quarter=1"); }, "unknown modifier");
  expect_error([] { EvalConfig::parse("a=x.st@FSX"); }, "neither F nor S");
  expect_error([] { EvalConfig::parse("a=x.st@search=r.json"); }, "needs FILE.json:KEY");
  expect_error([] { parse_eval_configs({"a=dense", "a=x.st"}); }, "given twice");
  expect_error([] { EvalConfig::parse("a=x.st@FSF").pattern.resolve(8); }, "has 3 layers but the model has 8");
  expect_error([] { EvalConfig::parse("a=x.st@search=/nonexistent/r.json:1/4").pattern.resolve(8); }, "cannot open");
  const std::string json = ::testing::TempDir() + "/search_result2.json";
  std::ofstream(json) << R"({"patterns": {"1/2": "FSFSFSFS"}})";
  expect_error([&] { EvalConfig::parse("a=x.st@search=" + json + ":1/8").pattern.resolve(8); }, "(it has: 1/2)");
  // A search of another model: the error names the search file and key (the CLI error catalogue).
  expect_error([&] { EvalConfig::parse("a=x.st@search=" + json + ":1/2").pattern.resolve(30); },
               "search result '" + json + "', pattern '1/2': layer pattern 'FSFSFSFS' has 8 layers but the model has 30");
  std::ofstream(json) << "{not json";
  expect_error([&] { EvalConfig::parse("a=x.st@search=" + json + ":1/8").pattern.resolve(8); }, "is not JSON");
  expect_error([] { EvalConfig::parse("a=/nonexistent.safetensors").load(30, 576, std::nullopt); }, "nonexistent");
}

// A small XML well-formedness check: tags nest and close, attributes are quoted, every '&' in
// text starts an entity, and no stray '<' or '>'. Returns the element count per tag name.
std::map<std::string, int> check_xml(const std::string& s) {
  std::map<std::string, int> count;
  std::vector<std::string> stack;
  size_t i = 0;
  auto check_text = [&](size_t a, size_t b) {
    for (size_t j = a; j < b; ++j) {
      EXPECT_NE(s[j], '>') << "stray '>' at " << j;
      if (s[j] == '&') {
        const size_t semi = s.find(';', j);
        EXPECT_TRUE(semi != std::string::npos && semi - j <= 6) << "bare '&' at " << j;
      }
    }
  };
  while (i < s.size()) {
    const size_t lt = s.find('<', i);
    check_text(i, lt == std::string::npos ? s.size() : lt);
    if (lt == std::string::npos) break;
    const size_t gt = s.find('>', lt);
    EXPECT_NE(gt, std::string::npos) << "unclosed tag at " << lt;
    if (gt == std::string::npos) break;
    std::string tag = s.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (tag.starts_with("?")) {
      EXPECT_TRUE(tag.ends_with("?"));
      continue;
    }
    if (tag.starts_with("/")) {
      EXPECT_FALSE(stack.empty()) << "closing " << tag << " with nothing open";
      if (stack.empty()) break;
      EXPECT_EQ(stack.back(), tag.substr(1));
      stack.pop_back();
      continue;
    }
    const bool self = tag.ends_with("/");
    if (self) tag.pop_back();
    const std::string name = tag.substr(0, tag.find(' '));
    // Attributes: name="value" pairs, values without '<' or '"'.
    size_t a = name.size();
    while (a < tag.size()) {
      while (a < tag.size() && tag[a] == ' ') ++a;
      if (a >= tag.size()) break;
      const size_t eq = tag.find("=\"", a);
      EXPECT_NE(eq, std::string::npos) << "bad attribute in <" << tag << ">";
      if (eq == std::string::npos) break;
      const size_t close = tag.find('"', eq + 2);
      EXPECT_NE(close, std::string::npos) << "unquoted attribute in <" << tag << ">";
      if (close == std::string::npos) break;
      check_text(eq + 2 + (lt + 1), close + (lt + 1));
      a = close + 1;
    }
    ++count[name];
    if (!self) stack.push_back(name);
  }
  EXPECT_TRUE(stack.empty()) << "unclosed <" << (stack.empty() ? "" : stack.back()) << ">";
  return count;
}

TEST(Svg, HeatmapIsWellFormedWithCellsLegendAndMarks) {
  const int64_t n = 5;
  std::vector<double> v(n * n);
  for (int64_t i = 0; i < n * n; ++i) v[i] = static_cast<double>(i) / (n * n - 1);
  svg::HeatmapOptions o;
  o.title = "overlap <top-k> & more";
  o.row_labels = {"a<b", "1", "2", "3", "4"};
  o.marked = {true, false, true, false, false};
  o.marked_legend = "F layer";
  o.value_label = "Jaccard";
  const std::string s = svg::heatmap(v, n, n, o);
  const auto count = check_xml(s);
  EXPECT_EQ(count.at("svg"), 1);
  EXPECT_EQ(count.at("title"), n * n);  // one tooltip per cell
  // Cells, 2 marks per marked layer (row and column), the legend mark, 64 scale bands, the
  // scale's frame and the background.
  EXPECT_EQ(count.at("rect"), n * n + 2 * 2 + 1 + 64 + 1 + 1);
  EXPECT_NE(s.find("a&lt;b"), std::string::npos);
  EXPECT_NE(s.find("&lt;top-k&gt; &amp; more"), std::string::npos);
  EXPECT_NE(s.find(svg::ramp_colour(0.0)), std::string::npos);
  EXPECT_NE(s.find(svg::ramp_colour(1.0)), std::string::npos);
  EXPECT_EQ(svg::ramp_colour(0.0), "#440154");
  EXPECT_EQ(svg::ramp_colour(1.0), "#fde725");
  EXPECT_EQ(svg::ramp_colour(-3.0), "#440154");
  EXPECT_THROW(svg::heatmap(v, n, n + 1, o), Error);
}

TEST(Svg, LineChartIsWellFormed) {
  svg::Series a{"loss", {0, 1, 2, 3}, {3.1, 2.5, 2.4, 2.41}}, b{"other & co", {0, 3}, {2.0, 2.2}};
  const std::string s = svg::line_chart({a, b}, {.title = "search", .x_label = "step", .y_label = "loss"});
  const auto count = check_xml(s);
  EXPECT_EQ(count.at("polyline"), 2);
  EXPECT_NE(s.find("other &amp; co"), std::string::npos);
  // A single point and a constant series still give finite coordinates.
  const std::string one = svg::line_chart({{"x", {1}, {1}}}, {});
  check_xml(one);
  EXPECT_EQ(one.find("nan"), std::string::npos);
  EXPECT_THROW(svg::line_chart({{"bad", {1, 2}, {1}}}, {}), Error);
  // Found reading the plot path for fuzz_search_json: a range narrower than the doubles' spacing at its magnitude (tick
  // step 5 at 1e17, where doubles are 16 apart) looped forever; one wider than any double
  // (-1e308 .. 1e308) gave an infinite step. Both now draw the ends as ticks.
  check_xml(svg::line_chart({{"far", {0, 1}, {1e17, 1e17 + 16}}}, {}));
  check_xml(svg::line_chart({{"wide", {-1e308, 1e308}, {0, 1}}}, {}));
}

TEST(Overlap, CaptureTopkOnTheModel) {
  IC_TEST_MODEL_OR_SKIP(path);
  const std::string idx = std::string(IC_SOURCE_DIR) + "/models/indexers/smollm2-h8d64-allF.safetensors";
  if (!std::filesystem::exists(idx)) GTEST_SKIP() << "no indexers at " << idx;
  LlamaModel& m = test::cpu_model(path);
  const int64_t L = m.config().n_layers;
  // Pattern F S F S...: each S layer's captured selection is its source's; k 16 of 96 tokens.
  m.set_dsa(std::make_shared<DsaSpec>(load_indexers(idx, L, m.config().dim, LayerPattern::from_freq(L, 2), 16)));
  const std::vector<int32_t> tokens = m.tokenizer().encode(
      std::string(200, 'a').replace(0, 60, "It is a truth universally acknowledged, that a single man in posses"), false);
  const int64_t n = std::min<int64_t>(96, tokens.size());
  const std::vector<Tensor> sel = capture_topk(m, std::span(tokens).first(n));
  m.set_dsa(nullptr);
  ASSERT_EQ(static_cast<int64_t>(sel.size()), L);
  for (const Tensor& t : sel) ASSERT_EQ(t.dim(0), n);
  const OverlapMatrix o = layer_overlap(sel, 16);
  for (int64_t l = 1; l < L; l += 2) EXPECT_DOUBLE_EQ(o.at(l, l - 1), 1.0) << "S layer " << l;
  // Rows before k hold the whole causal context: t + 1 valid entries, then -1.
  for (int64_t t = 0; t < 16; ++t) {
    std::set<int32_t> valid;
    for (int64_t j = 0; j < 16; ++j)
      if (const int32_t s = sel[0].data<int32_t>()[t * 16 + j]; s >= 0) valid.insert(s);
    EXPECT_EQ(static_cast<int64_t>(valid.size()), t + 1) << "row " << t;
    EXPECT_EQ(*valid.rbegin(), t) << "row " << t;
  }
  EXPECT_THROW(capture_topk(m, std::span(tokens).first(n)), Error);  // dense now
}

}  // namespace
}  // namespace ic
