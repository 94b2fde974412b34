// IndexReuse: the one object that applies IndexCache's F/S rule and hands selections on.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "model/index_reuse.h"
#include "test_util.h"

namespace ic {
namespace {

using test::error_of;

Tensor selection(int64_t n, int64_t k, int32_t fill) {
  Tensor t = Tensor::empty({n, k}, DType::I32);
  for (int64_t i = 0; i < n * k; ++i) t.data<int32_t>()[i] = fill;
  return t;
}

TEST(IndexReuse, DenseRunsNoIndexerAndHasNoPattern) {
  IndexReuse r;
  EXPECT_FALSE(r.sparse());
  for (int64_t l = 0; l < 4; ++l) EXPECT_FALSE(r.runs_indexer(l));
  EXPECT_NE(error_of([&] { r.pattern(); }).find("dense"), std::string::npos);
  EXPECT_NE(error_of([&] { r.selection(0); }).find("dense"), std::string::npos);
}

TEST(IndexReuse, SharedLayersGetTheirFullLayersSelection) {
  const LayerPattern p = LayerPattern::parse("FSSFS", 5);
  IndexReuse r(p);
  ASSERT_TRUE(r.sparse());
  for (int64_t l = 0; l < 5; ++l) EXPECT_EQ(r.runs_indexer(l), p.is_full(l)) << l;
  r.publish(0, selection(3, 2, 7));
  for (int64_t l : {0, 1, 2}) {
    EXPECT_EQ(r.source(l), 0);
    EXPECT_EQ(r.selection(l).data<int32_t>()[0], 7) << l;
  }
  // Layer 3 is F: until it publishes, nobody may use layer 0's selection in its place.
  EXPECT_NE(error_of([&] { r.selection(3); }).find("the selection held is layer 0's"), std::string::npos);
  EXPECT_NE(error_of([&] { r.selection(4); }).find("F layer 3"), std::string::npos);
  r.publish(3, selection(3, 2, 9));
  EXPECT_EQ(r.selection(4).data<int32_t>()[0], 9);
  EXPECT_EQ(r.held_layer(), 3);
}

TEST(IndexReuse, OnlyFullLayersPublishAndOnlyIntSelections) {
  IndexReuse r(LayerPattern::parse("FSF", 3));
  EXPECT_NE(error_of([&] { r.publish(1, selection(2, 2, 0)); }).find("layer 1 is S"), std::string::npos);
  EXPECT_NE(error_of([&] { r.publish(0, Tensor::empty({2, 2}, DType::F32)); }).find("I32 [n, k]"), std::string::npos);
  EXPECT_NE(error_of([&] { r.publish(0, Tensor()); }).find("nothing"), std::string::npos);
}

TEST(IndexReuse, ARangeStartingAtASharedLayerNeedsItsSourceProvided) {
  IndexReuse r(LayerPattern::parse("FSSS", 4));
  EXPECT_NE(error_of([&] { r.selection(2); }).find("no selection was published or provided"), std::string::npos);
  r.provide(0, selection(1, 4, 5));
  EXPECT_EQ(r.selection(2).data<int32_t>()[3], 5);
  EXPECT_NE(error_of([&] { r.provide(1, selection(1, 4, 5)); }).find("only F layers"), std::string::npos);
}

}  // namespace
}  // namespace ic
