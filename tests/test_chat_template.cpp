// apply_chatml against jinja2 renderings of SmolLM2's own chat template
// (tests/data/tokenizer_chat_vectors.json, from scripts/make-tokenizer-vectors).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_util.h"

namespace ic {
namespace {

nlohmann::json chat_vectors() {
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/tokenizer_chat_vectors.json");
  if (!in) throw Error("tests/data/tokenizer_chat_vectors.json is missing");
  return nlohmann::json::parse(in);
}

TEST(ChatTemplate, MatchesJinjaRenderings) {
  const nlohmann::json j = chat_vectors();
  ASSERT_GE(j.at("cases").size(), 10u);
  for (const auto& c : j.at("cases")) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c.at("messages")) messages.push_back({m.at("role"), m.at("content")});
    const bool gen = c.at("add_generation_prompt");
    EXPECT_EQ(apply_chatml(messages, gen), c.at("text").get<std::string>()) << c.dump();
  }
}

TEST(ChatTemplate, Examples) {
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(apply_chatml(user, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "S"}, {"user", "U"}};
  EXPECT_EQ(apply_chatml(sys, false), "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
  EXPECT_EQ(apply_chatml({}, true), "<|im_start|>assistant\n");
}

// The vectors were rendered from this template; a model with another one needs another renderer.
TEST(ChatTemplate, ModelTemplateIsTheOneTested) {
  IC_TEST_MODEL_OR_SKIP(path);
  const TokenizerData d = tokenizer_data_from_gguf(gguf::File::open(path));
  EXPECT_EQ(d.chat_template, chat_vectors().at("chat_template").get<std::string>());
  const Tokenizer tok(d);
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  const std::vector<int32_t> ids = tok.encode(apply_chatml(user, true));
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|>
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);  // two <|im_end|>
  EXPECT_EQ(tok.decode(ids), apply_chatml(user, true));
}

}  // namespace
}  // namespace ic
