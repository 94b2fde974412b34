#include <gtest/gtest.h>

#include "core/error.h"
#include "model/layer_pattern.h"
#include "test_util.h"

namespace ic {
namespace {

using test::error_of;

TEST(Pattern, ParsesLettersAndResolvesSources) {
  const LayerPattern p = LayerPattern::parse("FSSF S", 5);
  EXPECT_EQ(p.str(), "FSSFS");
  EXPECT_EQ(p.n_full(), 2);
  EXPECT_EQ(p.source(0), 0);
  EXPECT_EQ(p.source(2), 0);
  EXPECT_EQ(p.source(3), 3);
  EXPECT_EQ(p.source(4), 3);
  EXPECT_EQ(p.full_layers(), (std::vector<int64_t>{0, 3}));
}

TEST(Pattern, RejectsBadPatternsWithClearErrors) {
  EXPECT_NE(error_of([] { LayerPattern::parse("SFFF", 4); }).find("first layer must be F"), std::string::npos);
  EXPECT_NE(error_of([] { LayerPattern::parse("FSF", 4); }).find("has 3 layers but the model has 4"), std::string::npos);
  EXPECT_NE(error_of([] { LayerPattern::parse("FXSS", 4); }).find("only F (full) and S (shared)"), std::string::npos);
  EXPECT_THROW(LayerPattern::from_freq(8, 4, 0), Error);
  EXPECT_THROW(LayerPattern::from_freq(8, 0, 1), Error);
  EXPECT_THROW(LayerPattern::from_indexer_types({"shared", "full"}, 2), Error);
  EXPECT_THROW(LayerPattern::from_indexer_types({"full", "sparse"}, 2), Error);
  EXPECT_THROW(LayerPattern::parse("F", 1).source(1), Error);
}

TEST(Pattern, FrequencyConvention) {
  EXPECT_EQ(LayerPattern::from_freq(10, 4).str(), "FSSSFSSSFS");
  EXPECT_EQ(LayerPattern::from_freq(6, 2).str(), "FSFSFS");
  EXPECT_EQ(LayerPattern::from_freq(5, 1).str(), "FFFFF");
  // GLM-5.2: freq 4, offset 3 over 78 layers keeps 0, 1, 2, 6, 10, ..., 74.
  const LayerPattern glm = LayerPattern::from_freq(78, 4, 3);
  std::vector<int64_t> expect = {0, 1, 2};
  for (int64_t l = 6; l <= 74; l += 4) expect.push_back(l);
  EXPECT_EQ(glm.full_layers(), expect);
  EXPECT_EQ(glm.n_full(), 21);
}

TEST(Pattern, IndexerTypesAndStages) {
  const LayerPattern p = LayerPattern::from_indexer_types({"full", "shared", "shared", "full"}, 4);
  EXPECT_EQ(p, LayerPattern::parse("FSSF", 4));
  EXPECT_NO_THROW(p.check_stage_starts({0, 3}));
  EXPECT_NE(error_of([&] { p.check_stage_starts({0, 2}); }).find("stage starting at layer 2"), std::string::npos);
}

}  // namespace
}  // namespace ic
