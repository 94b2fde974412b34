// describe_json, the words the config.json and tokenizer.json readers put in "X is Y, Z expected"
// messages: one case per JSON type, the value shown for the scalars.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/json_describe.h"

namespace ic {
namespace {

using json = nlohmann::json;

TEST(DescribeJson, EveryType) {
  EXPECT_EQ(describe_json(json(nullptr)), "null");
  EXPECT_EQ(describe_json(json(true)), "a boolean (true)");
  EXPECT_EQ(describe_json(json("a long string that is not shown")), "a string");
  EXPECT_EQ(describe_json(json::array({1, 2})), "an array");
  EXPECT_EQ(describe_json(json::object()), "an object");
  EXPECT_EQ(describe_json(json(-7)), "an integer (-7)");
  EXPECT_EQ(describe_json(json(std::numeric_limits<uint64_t>::max())), "an integer (18446744073709551615)");
  EXPECT_EQ(describe_json(json(0.5)), "a float (0.5)");
  EXPECT_EQ(describe_json(json::binary({1, 2})), "binary");  // nlohmann's own name, never from a file
}

}  // namespace
}  // namespace ic
