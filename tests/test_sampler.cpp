#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "runtime/sampler.h"

namespace ic {
namespace {

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s({});
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -2.0f, 3.0f}), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  const std::vector<float> logits = {0.0f, 0.5f, 1.0f, 0.2f, -1.0f};
  Sampler a({1.0f, 0, 1.0f, 42}), b({1.0f, 0, 1.0f, 42}), c({1.0f, 0, 1.0f, 43});
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.sample(logits));
    db.push_back(b.sample(logits));
    dc.push_back(c.sample(logits));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

// Frequencies of 40,000 draws at temperature 1 against softmax probabilities: each count is
// binomial, so 5 standard deviations bound it (the draws are seeded: the test cannot flake).
TEST(Sampler, TemperatureOneFollowsSoftmax) {
  const std::vector<double> p = {0.5, 0.3, 0.2};
  std::vector<float> logits;
  for (double v : p) logits.push_back(static_cast<float>(std::log(v)));
  Sampler s({1.0f, 0, 1.0f, 7});
  const int n = 40000;
  std::vector<int> count(3);
  for (int i = 0; i < n; ++i) ++count[s.sample(logits)];
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(count[k], n * p[k], 5 * std::sqrt(n * p[k] * (1 - p[k]))) << k;
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  const std::vector<float> logits = {2.0f, 1.9f, 1.8f, 0.0f};
  Sampler k2({5.0f, 2, 1.0f, 1});
  Sampler p_small({5.0f, 0, 0.01f, 1});  // the nucleus holds only the top token
  Sampler k1({5.0f, 1, 1.0f, 1});
  for (int i = 0; i < 2000; ++i) {
    EXPECT_LT(k2.sample(logits), 2);
    EXPECT_EQ(p_small.sample(logits), 0);
    EXPECT_EQ(k1.sample(logits), 0);
  }
}

TEST(Sampler, RejectsBadSettings) {
  EXPECT_THROW(Sampler({-1.0f, 0, 1.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, -3, 1.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 0.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 1.5f, 0}), Error);
}

}  // namespace
}  // namespace ic
