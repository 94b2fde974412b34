// HF tokenizer.json loading: the tiny DeepSeek-V3 and GLM tokenizers of tests/data/tokenizers
// against the ids HF `tokenizers` gives for 521 strings each (scripts/make-tokenizer-json-vectors),
// small tokenizers that pin down HF's matching rules, the two new pre-tokenizers piece by piece,
// and a clear error for each kind of bad file.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/pretokenize.h"
#include "io/tokenizer.h"
#include "io/tokenizer_json.h"
#include "test_util.h"

namespace ic {
namespace {

using Json = nlohmann::json;

std::string data_dir() { return std::string(IC_SOURCE_DIR) + "/tests/data/tokenizers/"; }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path << " is missing";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Tokenizer load_tiny(const std::string& name) {
  const std::string dir = data_dir() + name;
  return Tokenizer(tokenizer_data_from_json_files(dir + "/tokenizer.json", dir + "/tokenizer_config.json"));
}

std::vector<int32_t> ids_of(const Json& v) { return v.get<std::vector<int32_t>>(); }

class TinyTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(TinyTokenizer, EncodeMatchesHfOnEveryVector) {
  const Tokenizer tk = load_tiny(GetParam());
  EXPECT_EQ(tk.vocab_size(), 1024);
  const Json vj = Json::parse(read_text(data_dir() + GetParam() + "/tokenizer_vectors.json"));
  const std::vector<int32_t> prefix = ids_of(vj["post_processor_prefix"]);
  ASSERT_GE(vj["vectors"].size(), 500u);
  size_t with_specials_as_text = 0;
  for (const Json& v : vj["vectors"]) {
    const std::string text = v["text"];
    const std::vector<int32_t> ids = ids_of(v["ids"]);
    const std::vector<int32_t> got = tk.encode(text, /*parse_special=*/true);
    EXPECT_EQ(got, ids) << "text: " << Json(text).dump();
    const std::vector<int32_t> as_text = v.contains("ids_special_as_text") ? ids_of(v["ids_special_as_text"]) : ids;
    with_specials_as_text += v.contains("ids_special_as_text");
    EXPECT_EQ(tk.encode(text, /*parse_special=*/false), as_text) << "text: " << Json(text).dump();
    EXPECT_EQ(tk.decode(got), text);
    EXPECT_EQ(tk.decode(as_text), text);
    // What HF's post-processor gives is what a caller gets by honouring add_bos(), and by
    // post_prefix() + ids + post_suffix().
    std::vector<int32_t> with_bos;
    if (tk.add_bos()) with_bos.push_back(tk.bos_id());
    with_bos.insert(with_bos.end(), got.begin(), got.end());
    std::vector<int32_t> around(tk.post_prefix().begin(), tk.post_prefix().end());
    around.insert(around.end(), got.begin(), got.end());
    around.insert(around.end(), tk.post_suffix().begin(), tk.post_suffix().end());
    std::vector<int32_t> hf = prefix;
    hf.insert(hf.end(), ids.begin(), ids.end());
    if (v.contains("ids_with_post_processor")) hf = ids_of(v["ids_with_post_processor"]);
    EXPECT_EQ(with_bos, hf) << "text: " << Json(text).dump();
    EXPECT_EQ(around, hf) << "text: " << Json(text).dump();
  }
  EXPECT_GT(with_specials_as_text, 20u) << "the vectors should exercise parse_special = false";
}

INSTANTIATE_TEST_SUITE_P(HfTokenizerJson, TinyTokenizer, ::testing::Values("deepseek-v3-tiny", "glm-tiny"),
                         [](const auto& info) { return std::string(info.param[0] == 'd' ? "DeepseekV3" : "Glm"); });

TEST(HfTokenizerJson, DeepseekSpecialTokensAndBos) {
  const Tokenizer tk = load_tiny("deepseek-v3-tiny");
  EXPECT_EQ(tk.data().pre, "deepseek-v3");
  const int32_t bos = tk.token_id("<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  EXPECT_EQ(bos, 0);
  EXPECT_EQ(tk.bos_id(), 0);
  EXPECT_EQ(tk.eos_id(), 1);
  EXPECT_TRUE(tk.add_bos());  // tokenizer_config.json: add_bos_token true
  EXPECT_TRUE(tk.is_control(0));
  // "<think>" is an added token that is not special: matched even without parse_special.
  const int32_t think = tk.token_id("<think>");
  ASSERT_GE(think, 0);
  EXPECT_FALSE(tk.is_control(think));
  EXPECT_EQ(tk.encode("<think>", false), std::vector<int32_t>{think});
  EXPECT_EQ(tk.vocab_size(), 1024);
}

TEST(HfTokenizerJson, GlmSpecialTokensAndNoBos) {
  const Tokenizer tk = load_tiny("glm-tiny");
  EXPECT_EQ(tk.data().pre, "glm4");
  EXPECT_FALSE(tk.add_bos());
  EXPECT_EQ(tk.bos_id(), -1);
  EXPECT_EQ(tk.eos_id(), tk.token_id("<|endoftext|>"));
  for (const char* t : {"[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|endoftext|>"}) {
    const int32_t id = tk.token_id(t);
    ASSERT_GE(id, 1012) << t;  // after the model vocabulary, as in GLM-4.5 / GLM-5
    EXPECT_TRUE(tk.is_control(id)) << t;
    EXPECT_EQ(tk.encode(std::string("[gMASK]<sop>") + t),
              (std::vector<int32_t>{tk.token_id("[gMASK]"), tk.token_id("<sop>"), id}));
  }
}

// HF rules the tiny tokenizers do not reach: ignore_merges, normalized added tokens matched in
// a second pass, added tokens in the byte-level alphabet, special-token text hiding added tokens,
// a GLM-style post-processor with two tokens before the text and one after.
TEST(HfTokenizerJson, MatchesHfMatchingRules) {
  const Json all = Json::parse(read_text(data_dir() + "hf_semantics_vectors.json"));
  ASSERT_EQ(all["cases"].size(), 6u);
  for (const Json& c : all["cases"]) {
    SCOPED_TRACE(c["what"].get<std::string>());
    const Tokenizer tk(tokenizer_data_from_json(c["tokenizer_json"].get<std::string>(), ""));
    for (const Json& v : c["vectors"]) {
      const std::string text = v["text"];
      const std::vector<int32_t> ids = tk.encode(text, true);
      EXPECT_EQ(ids, ids_of(v["ids"])) << text;
      std::vector<int32_t> around(tk.post_prefix().begin(), tk.post_prefix().end());
      around.insert(around.end(), ids.begin(), ids.end());
      around.insert(around.end(), tk.post_suffix().begin(), tk.post_suffix().end());
      EXPECT_EQ(around, ids_of(v["ids_with_post_processor"])) << text;
      EXPECT_EQ(tk.encode(text, false), ids_of(v["ids_special_as_text"])) << text;
      EXPECT_EQ(tk.decode(ids), v["decoded"].get<std::string>()) << text;
    }
  }
}

using test::pieces;
using Pieces = std::vector<std::string>;

TEST(PreTokenize, DeepseekV3Regexes) {
  const auto d = [](std::string_view t) { return pieces(PreTokenizer::DeepseekV3, t); };
  EXPECT_EQ(d("1234567"), (Pieces{"123", "456", "7"}));          // \p{N}{1,3}
  EXPECT_EQ(d("a1b22"), (Pieces{"a", "1", "b", "22"}));
  // CJK runs (U+4E00-U+9FA5 and kana) are pieces of their own; U+9FA6 is outside the range.
  EXPECT_EQ(d("\xE4\xB8\xAD\xE6\x96\x87" "abc"), (Pieces{"\xE4\xB8\xAD\xE6\x96\x87", "abc"}));
  EXPECT_EQ(d("\xE9\xBE\xA5\xE9\xBE\xA6"), (Pieces{"\xE9\xBE\xA5", "\xE9\xBE\xA6"}));
  EXPECT_EQ(d(".net (x)"), (Pieces{".net", " (", "x", ")"}));    // ASCII punctuation + ASCII letters
  EXPECT_EQ(d("it's IT'S"), (Pieces{"it", "'s", " IT", "'S"}));
  EXPECT_EQ(d("cafe\xCC\x81!"), (Pieces{"cafe\xCC\x81", "!"}));  // marks join letters
  EXPECT_EQ(d("x!!\n\ny"), (Pieces{"x", "!!\n\n", "y"}));         // punctuation takes the newlines after it
  EXPECT_EQ(d("a  \n  b"), (Pieces{"a", "  \n", " ", " b"}));
  EXPECT_EQ(d("a   "), (Pieces{"a", "   "}));
  // A control char matches nothing but prefixes a word; alone it is a gap piece of its own.
  EXPECT_EQ(d("\x01" "ab"), (Pieces{"\x01" "ab"}));
  EXPECT_EQ(d("a\x01\x02"), (Pieces{"a", "\x01\x02"}));
  EXPECT_EQ(d("x\x01\x02y"), (Pieces{"x", "\x01", "\x02y"}));
  EXPECT_EQ(d("x\xFF\xFEy"), (Pieces{"x", "\xFF", "\xFEy"}));  // invalid bytes count as controls
  EXPECT_EQ(d(""), (Pieces{}));
}

TEST(PreTokenize, Glm4Regex) {
  const auto g = [](std::string_view t) { return pieces(PreTokenizer::Glm4, t); };
  EXPECT_EQ(g("It's IT'S 'Re"), (Pieces{"It", "'s", " IT", "'S", " '", "Re"}));
  EXPECT_EQ(g("'\xC5\xBF" "a"), (Pieces{"'\xC5\xBF", "a"}));  // long s folds to s
  EXPECT_EQ(g("1234567 x"), (Pieces{"123", "456", "7", " x"}));
  EXPECT_EQ(g(".net\tx"), (Pieces{".net", "\tx"}));           // one non-letter prefixes a word
  EXPECT_EQ(g("a!!\n\nb"), (Pieces{"a", "!!\n\n", "b"}));
  EXPECT_EQ(g("a \n\n b"), (Pieces{"a", " \n\n", " b"}));
  EXPECT_EQ(g("\n1"), (Pieces{"\n", "1"}));
  EXPECT_EQ(g("x\xFF\xFEy"), (Pieces{"x", "\xFF\xFE", "y"}));
  EXPECT_EQ(pre_tokenizer_from_name("deepseek-v3"), PreTokenizer::DeepseekV3);
  EXPECT_EQ(pre_tokenizer_from_name("glm4"), PreTokenizer::Glm4);
}

// Any bytes at all: pieces cover the input, and the tokenizers round-trip it.
TEST(HfTokenizerJson, RandomBytesRoundTrip) {
  const Tokenizer ds = load_tiny("deepseek-v3-tiny"), glm = load_tiny("glm-tiny");
  std::mt19937 rng(20261203);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : " a1.\n\xE4\xB8\xAD"[rng() % 9]);
    for (const Tokenizer* tk : {&ds, &glm}) {
      EXPECT_EQ(tk->decode(tk->encode(s, true)), s);
      EXPECT_EQ(tk->decode(tk->encode(s, false)), s);
    }
  }
}

// tokenizers < 0.20 wrote merges as "a b" strings, later ones as pairs: both read alike.
TEST(HfTokenizerJson, MergesAsStringsOrPairs) {
  Json j = Json::parse(read_text(data_dir() + "glm-tiny/tokenizer.json"));
  ASSERT_TRUE(j["model"]["merges"][0].is_array());
  const Tokenizer pairs(tokenizer_data_from_json(j.dump(), ""));
  for (Json& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const Tokenizer strings(tokenizer_data_from_json(j.dump(), ""));
  const std::string text = read_text(std::string(IC_SOURCE_DIR) + "/tests/data/reference_text.txt");
  EXPECT_EQ(pairs.encode(text), strings.encode(text));
  EXPECT_EQ(pairs.data().merges, strings.data().merges);
}

// Speed on real text, with the round trip as the check that the work was done.
TEST(HfTokenizerJson, EncodesAMegabyteRoundTrip) {
  const std::string para = read_text(std::string(IC_SOURCE_DIR) + "/tests/data/reference_text.txt");
  std::string text;
  while (text.size() < (1u << 20)) text += para;
  for (const char* name : {"deepseek-v3-tiny", "glm-tiny"}) {
    const Tokenizer tk = load_tiny(name);
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tk.encode(text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(tk.decode(ids), text);
    std::printf("[ perf     ] %s: encoded %zu bytes into %zu tokens in %.3f s (%.1f MB/s)\n", name, text.size(),
                ids.size(), s, text.size() / s / 1e6);
  }
}

// ---------------------------------------------------------------------------------------
// Bad files: each mutation of the tiny DeepSeek tokenizer gives an error naming the field.

Json tiny_json() { return Json::parse(read_text(data_dir() + "deepseek-v3-tiny/tokenizer.json")); }

void expect_error(const std::string& json, const std::string& config, const std::string& needle) {
  try {
    const Tokenizer tk(tokenizer_data_from_json(json, config));
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void expect_error(const std::function<void(Json&)>& mutate, const std::string& needle) {
  Json j = tiny_json();
  mutate(j);
  expect_error(j.dump(), "", needle);
}

TEST(HfTokenizerJson, TruncatedOrNotJson) {
  const std::string text = read_text(data_dir() + "deepseek-v3-tiny/tokenizer.json");
  for (size_t cut : {size_t{0}, size_t{1}, text.size() / 2, text.size() - 1})
    expect_error(text.substr(0, cut), "", "tokenizer.json is not valid JSON");
  expect_error("[1, 2]", "", "tokenizer.json is an array, a JSON object expected");
  expect_error(text, "{\"add_bos_token\": tru", "tokenizer_config.json is not valid JSON");
  expect_error(std::string(100, '[') + std::string(100, ']'), "", "nests deeper than 64");
}

TEST(HfTokenizerJson, WrongTypes) {
  expect_error([](Json& j) { j["model"]["vocab"] = Json::array(); }, "model.vocab is an array, an object expected");
  expect_error([](Json& j) { j["model"]["merges"] = 7; }, "model.merges is an integer (7), an array expected");
  expect_error([](Json& j) { j["model"]["merges"][3] = Json::array({"a"}); }, "model.merges[3]");
  expect_error([](Json& j) { j["model"]["vocab"]["a"] = "x"; }, "model.vocab[\"a\"] is a string, a token id expected");
  expect_error([](Json& j) { j["model"]["vocab"]["a"] = -3; }, "outside the token ids");
  expect_error([](Json& j) { j["added_tokens"][0]["content"] = 5; }, "added_tokens[0].content is an integer (5)");
  expect_error([](Json& j) { j["added_tokens"][0]["special"] = "yes"; }, "added_tokens[0].special is a string");
  expect_error([](Json& j) { j["added_tokens"] = Json::object(); }, "added_tokens is an object, an array expected");
  expect_error([](Json& j) { j.erase("model"); }, "tokenizer.json: model is missing");
}

TEST(HfTokenizerJson, UnsupportedParts) {
  expect_error([](Json& j) { j["model"]["type"] = "WordPiece"; }, "only BPE models are supported");
  expect_error([](Json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout");
  expect_error([](Json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback");
  expect_error([](Json& j) { j["model"]["unk_token"] = "<unk>"; }, "model.unk_token");
  expect_error([](Json& j) { j["normalizer"] = Json{{"type", "Lowercase"}}; }, "normalizer");
  expect_error([](Json& j) { j["decoder"] = Json{{"type", "WordPiece"}}; }, "only the ByteLevel decoder");
  expect_error([](Json& j) { j["truncation"] = Json{{"max_length", 8}}; }, "truncation");
  expect_error([](Json& j) { j["added_tokens"][0]["lstrip"] = true; }, "added_tokens[0].lstrip");
  expect_error([](Json& j) { j["pre_tokenizer"] = Json{{"type", "Whitespace"}}; }, "not a supported pre-tokenizer");
  // One character off in a regex is a different tokenizer, not a near miss.
  expect_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{N}{1,4}"; },
               "not a supported pre-tokenizer");
  expect_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][3]["add_prefix_space"] = true; },
               "not a supported pre-tokenizer");
  expect_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["behavior"] = "Removed"; },
               "not a supported pre-tokenizer");
  expect_error([](Json& j) { j["post_processor"]["single"].push_back(j["post_processor"]["single"][1]); },
               "only one $A is supported");
  expect_error([](Json& j) { j["post_processor"]["special_tokens"].clear(); }, "special_tokens.<");
  expect_error([](Json& j) { j["post_processor"] = Json{{"type", "RobertaProcessing"}}; }, "RobertaProcessing");
}

TEST(HfTokenizerJson, InconsistentVocabulary) {
  expect_error([](Json& j) { j["model"]["merges"][0] = Json::array({"\xC4\xA0", "zz"}); }, "is not in the vocabulary");
  expect_error([](Json& j) { j["model"]["merges"].push_back(j["model"]["merges"][0]); }, "repeats an earlier merge");
  // Ids must run 0..n-1: a gap, a duplicate, and an added token whose id disagrees with the vocab.
  expect_error([](Json& j) { j["model"]["vocab"]["a"] = 5000; }, "without gaps");
  expect_error([](Json& j) { j["model"]["vocab"]["a"] = 0; }, "is given to both");
  expect_error([](Json& j) { j["added_tokens"][0]["id"] = 7; }, "but model.vocab gives it id 0");
  expect_error([](Json& j) { j["added_tokens"].push_back(j["added_tokens"][4]); }, "repeats an earlier added token");
  // A vocabulary of a billion entries is refused before anything is allocated for it.
  expect_error([](Json& j) { j["added_tokens"][5]["id"] = 1000000000; }, "outside the token ids 0..9999999");
  expect_error([](Json& j) { j["model"]["vocab"]["a"] = 1u << 31; }, "outside the token ids 0..9999999");
}

TEST(HfTokenizerJson, ConfigErrors) {
  const std::string json = read_text(data_dir() + "deepseek-v3-tiny/tokenizer.json");
  expect_error(json, R"({"add_eos_token": true})", "tokenizer_config.json: add_eos_token");
  expect_error(json, R"({"add_bos_token": true, "bos_token": "<nope>"})", "bos_token '<nope>' is not a token");
  expect_error(json, R"({"add_bos_token": "yes"})", "add_bos_token is a string, a boolean expected");
  expect_error(json, R"({"chat_template": 3})", "chat_template is an integer (3)");
  expect_error(json, R"({"added_tokens_decoder": {"0": {"content": "<x>"}}})", "differs from");
  expect_error(json, R"({"added_tokens_decoder": {"99999": {"content": "<x>"}}})", "has no token 99999");
  // add_bos_token decides over the post-processor, as transformers' Llama-family classes do.
  const Tokenizer no_bos(tokenizer_data_from_json(json, R"({"add_bos_token": false})"));
  EXPECT_FALSE(no_bos.add_bos());
  const Tokenizer by_post(tokenizer_data_from_json(json, ""));
  EXPECT_TRUE(by_post.add_bos());
  EXPECT_EQ(by_post.bos_id(), 0);
  const Tokenizer named(tokenizer_data_from_json(
      json, R"({"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]})"));
  EXPECT_EQ(named.data().chat_template, "d");
}

// A 1 GB tokenizer.json (sparse: no disk used) is refused by its size, before it is read.
TEST(HfTokenizerJson, HugeFileRefusedBeforeReading) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "ic_tokenizer_json_huge";
  std::filesystem::create_directories(dir);
  const std::filesystem::path big = dir / "tokenizer.json";
  { std::ofstream(big) << "{"; }
  std::filesystem::resize_file(big, size_t{1} << 30);
  try {
    tokenizer_data_from_json_files(big.string(), "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than the 134217728-byte limit"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(HfTokenizerJson, FilesNamedInErrors) {
  try {
    tokenizer_data_from_json_files("/nonexistent/tokenizer.json", "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json"), std::string::npos) << e.what();
  }
  const std::string dir = data_dir() + "deepseek-v3-tiny";
  try {
    tokenizer_data_from_json_files(dir + "/tokenizer_vectors.json", "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_vectors.json: model is missing"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ic
