// Tokenizer tests: the pre-tokenizer and BPE on small synthetic vocabularies (no model needed),
// then SmolLM2's real vocabulary from the GGUF against vectors from HF `tokenizers`
// (scripts/make-tokenizer-vectors), round trips on random bytes and speed.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/merge_table.h"
#include "io/pretokenize.h"
#include "io/tokenizer.h"
#include "io/unicode.h"
#include "io/utf8_stream.h"
#include "test_util.h"

namespace ic {
namespace {

using test::pieces;

using Pieces = std::vector<std::string>;

TEST(Unicode, Classes) {
  using unicode::CharClass;
  EXPECT_EQ(unicode::char_class('a'), CharClass::Letter);
  EXPECT_EQ(unicode::char_class('7'), CharClass::Number);
  EXPECT_EQ(unicode::char_class('\n'), CharClass::Space);
  EXPECT_EQ(unicode::char_class('!'), CharClass::Other);
  EXPECT_EQ(unicode::char_class(0x1C), CharClass::Other);   // not White_Space, unlike str.isspace
  EXPECT_EQ(unicode::char_class(0x85), CharClass::Space);
  EXPECT_EQ(unicode::char_class(0xA0), CharClass::Space);
  EXPECT_EQ(unicode::char_class(0x3000), CharClass::Space);
  EXPECT_EQ(unicode::char_class(0xE9), CharClass::Letter);   // é
  EXPECT_EQ(unicode::char_class(0x4E2D), CharClass::Letter); // 中
  EXPECT_EQ(unicode::char_class(0x0663), CharClass::Number); // Arabic-Indic 3
  EXPECT_EQ(unicode::char_class(0x216B), CharClass::Number); // Roman numeral (Nl)
  EXPECT_EQ(unicode::char_class(0xBD), CharClass::Number);   // ½ (No)
  EXPECT_EQ(unicode::char_class(0x0301), CharClass::Other);  // combining mark
  EXPECT_EQ(unicode::char_class(0x1F600), CharClass::Other); // emoji
  EXPECT_EQ(unicode::char_class(0x10FFFF), CharClass::Other);
  EXPECT_EQ(unicode::char_class(unicode::kInvalidCodepoint), CharClass::Other);
}

TEST(Unicode, DecodeUtf8RejectsInvalidForms) {
  const auto dec = [](std::string_view s) { return unicode::decode_utf8(s, 0); };
  EXPECT_EQ(dec("\xC3\xA9").cp, 0xE9u);
  EXPECT_EQ(dec("\xC3\xA9").len, 2u);
  EXPECT_EQ(dec("\xF0\x9F\x98\x80").cp, 0x1F600u);
  for (std::string_view bad : {"\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                               "\x80", "\xFF", "\xE2\x82", "\xC3("}) {
    EXPECT_EQ(dec(bad).cp, unicode::kInvalidCodepoint) << bad;
    EXPECT_EQ(dec(bad).len, 1u);
  }
}

TEST(PreTokenize, Gpt2Regex) {
  const auto g = [](std::string_view t) { return pieces(PreTokenizer::Gpt2, t); };
  EXPECT_EQ(g("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(g("Hello  world"), (Pieces{"Hello", " ", " world"}));
  EXPECT_EQ(g("end.   "), (Pieces{"end", ".", "   "}));
  EXPECT_EQ(g("a\n\n  b"), (Pieces{"a", "\n\n ", " b"}));
  EXPECT_EQ(g("it's we'll 'x"), (Pieces{"it", "'s", " we", "'ll", " '", "x"}));
  EXPECT_EQ(g("IT'S"), (Pieces{"IT", "'", "S"}));  // contractions are case-sensitive
  EXPECT_EQ(g("a  12 !?"), (Pieces{"a", " ", " 12", " !?"}));
  EXPECT_EQ(g("x\xFF\xFEy"), (Pieces{"x", "\xFF\xFE", "y"}));  // invalid bytes are punctuation
  EXPECT_EQ(g(""), (Pieces{}));
}

TEST(PreTokenize, SmollmSplitsDigitsFirst) {
  const auto s = [](std::string_view t) { return pieces(PreTokenizer::Smollm, t); };
  EXPECT_EQ(s("a  12 !?"), (Pieces{"a", "  ", "1", "2", " !?"}));
  // The regex sees each stretch between digits on its own: the spaces before "1" end a stretch.
  EXPECT_EQ(s("x  1"), (Pieces{"x", "  ", "1"}));
  EXPECT_EQ(s("v1.2"), (Pieces{"v", "1", ".", "2"}));
  EXPECT_EQ(s("\xD9\xA3\xC2\xBD"), (Pieces{"\xD9\xA3", "\xC2\xBD"}));  // any \p{N}
  EXPECT_THROW(pre_tokenizer_from_name("default"), Error);
  EXPECT_EQ(pre_tokenizer_from_name("gpt-2"), PreTokenizer::Gpt2);
}

TEST(MergeTable, GrowsAndKeepsFirstRank) {
  MergeTable t;  // starts small: inserting forces several rehashes
  for (int32_t i = 0; i < 5000; ++i) t.insert(i, i * 7 + 1, {i, i + 100000});
  t.insert(3, 22, {999999, 0});  // a repeated pair keeps its first (best) rank
  EXPECT_EQ(t.size(), 5000u);
  for (int32_t i = 0; i < 5000; ++i) {
    const MergeTable::Merge* m = t.find(i, i * 7 + 1);
    ASSERT_NE(m, nullptr) << i;
    EXPECT_EQ(m->rank, i);
    EXPECT_EQ(m->result, i + 100000);
    EXPECT_EQ(t.find(i * 7 + 1, i), nullptr);  // order matters
  }
  EXPECT_EQ(t.find(3, 22)->rank, 3);
  EXPECT_EQ(t.find(0, 0), nullptr);
}

// A tiny byte-level vocabulary: the 256 byte tokens, then the given extra tokens and merges.
TokenizerData tiny_data(std::vector<std::string> extra, std::vector<std::string> merges) {
  TokenizerData d;
  d.pre = "gpt2";
  d.tokens = test::byte_level_tokens();
  for (auto& t : extra) d.tokens.push_back(std::move(t));
  d.merges = std::move(merges);
  return d;
}

TEST(Bpe, MergesByRankLeftmostFirst) {
  TokenizerData d = tiny_data({"aa", "ab", "bc", "abc", "aaa"}, {"b c", "a b", "a a", "ab c", "aa a"});
  Tokenizer tok(std::move(d));
  const auto id = [&](std::string_view t) { return tok.token_id(t); };
  // "b c" outranks "a b", so "abc" is a + bc; "ab c" never applies.
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{id("a"), id("bc")}));
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{id("ab")}));
  // Equal ranks merge leftmost first: aaaa -> aa aa, aaa -> aa a -> aaa.
  EXPECT_EQ(tok.encode("aaaa"), (std::vector<int32_t>{id("aa"), id("aa")}));
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{id("aaa")}));
  EXPECT_EQ(tok.encode("aaaaa"), (std::vector<int32_t>{id("aa"), id("aaa")}));
  EXPECT_EQ(tok.decode(tok.encode("xabcaaaay")), "xabcaaaay");
}

TEST(Bpe, SpecialTokensLongestMatch) {
  TokenizerData d = tiny_data({"<s>", "<s>x", "<u>"}, {});
  d.token_types.assign(d.tokens.size(), kTokenNormal);
  d.token_types[256] = kTokenControl;
  d.token_types[257] = kTokenControl;
  d.token_types[258] = kTokenUserDefined;
  Tokenizer tok(std::move(d));
  EXPECT_EQ(tok.encode("<s>x<s>"), (std::vector<int32_t>{257, 256}));
  EXPECT_EQ(tok.encode("a<s>"), (std::vector<int32_t>{tok.token_id("a"), 256}));
  // Without parse_special control tokens are text; user-defined ones still match.
  const std::vector<int32_t> plain = tok.encode("<s><u>", false);
  EXPECT_EQ(plain.size(), 4u);
  EXPECT_EQ(plain.back(), 258);
  EXPECT_EQ(tok.decode(plain), "<s><u>");
  EXPECT_TRUE(tok.is_control(256));
  EXPECT_FALSE(tok.is_control(258));
}

TEST(Bpe, RejectsBadData) {
  const auto bad = [](auto edit) {
    TokenizerData d = tiny_data({"ab"}, {"a b"});
    edit(d);
    EXPECT_THROW(Tokenizer{std::move(d)}, Error);
  };
  bad([](TokenizerData& d) { d.model = "llama"; });
  bad([](TokenizerData& d) { d.pre = "default"; });
  bad([](TokenizerData& d) { d.merges.push_back("a z z"); });
  bad([](TokenizerData& d) { d.merges.push_back("b a"); });   // "ba" is not a token
  bad([](TokenizerData& d) { d.merges.push_back("ab"); });
  bad([](TokenizerData& d) { d.bos_id = static_cast<int32_t>(d.tokens.size()); });
  bad([](TokenizerData& d) { d.token_types = {1, 1}; });
  bad([](TokenizerData& d) { d.tokens.push_back("has space"); });  // ' ' is not in the alphabet
  bad([](TokenizerData& d) { d.tokens.clear(); d.merges.clear(); });
  Tokenizer ok(tiny_data({"ab"}, {"a b"}));
  EXPECT_THROW(ok.piece(-1), Error);
  EXPECT_THROW(ok.decode(std::vector<int32_t>{257}), Error);
}

TEST(TokenizerGguf, ReadsKeysFromAWrittenFile) {
  const TokenizerData tiny = tiny_data({"ab", "<c>"}, {"a b"});
  const auto file = [&](bool with_pre, bool with_model) {
    gguf::Writer w;
    if (with_model) w.add_string("tokenizer.ggml.model", "gpt2");
    if (with_pre) w.add_string("tokenizer.ggml.pre", "smollm");
    w.add_string_array("tokenizer.ggml.tokens", tiny.tokens);
    w.add_string_array("tokenizer.ggml.merges", tiny.merges);
    std::vector<int64_t> types(tiny.tokens.size(), kTokenNormal);
    types.back() = kTokenControl;
    w.add("tokenizer.ggml.token_type", gguf::Value::make_int_array(gguf::ValueType::INT32, types));
    w.add_uint32("tokenizer.ggml.eos_token_id", 257);
    w.add_bool("tokenizer.ggml.add_bos_token", true);
    w.add_string("tokenizer.chat_template", "{{ x }}");
    return gguf::File::from_buffer(w.bytes());
  };
  const TokenizerData d = tokenizer_data_from_gguf(file(true, true));
  EXPECT_EQ(d.model, "gpt2");
  EXPECT_EQ(d.pre, "smollm");
  EXPECT_EQ(d.tokens, tiny.tokens);
  EXPECT_EQ(d.merges, tiny.merges);
  ASSERT_EQ(d.token_types.size(), tiny.tokens.size());
  EXPECT_EQ(d.token_types.back(), kTokenControl);
  EXPECT_EQ(d.bos_id, -1);
  EXPECT_EQ(d.eos_id, 257);
  EXPECT_TRUE(d.add_bos);
  EXPECT_EQ(d.chat_template, "{{ x }}");
  const Tokenizer tok(d);
  EXPECT_EQ(tok.encode("ab<c>"), (std::vector<int32_t>{256, 257}));
  // No pre key reads as llama.cpp's "default", which the tokenizer refuses by name.
  const TokenizerData no_pre = tokenizer_data_from_gguf(file(false, true));
  EXPECT_EQ(no_pre.pre, "default");
  EXPECT_THROW(Tokenizer{no_pre}, Error);
  EXPECT_THROW(tokenizer_data_from_gguf(file(true, false)), Error);
}

// SmolLM2's tokenizer, loaded once for the tests below; null when the model is absent.
const Tokenizer* smollm2() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    const std::string path = test::find_test_model();
    if (path.empty()) return nullptr;
    return std::make_unique<Tokenizer>(tokenizer_data_from_gguf(gguf::File::open(path)));
  }();
  return tok.get();
}

#define SMOLLM2_OR_SKIP(var)                   \
  const Tokenizer* var = smollm2();            \
  if (!var) {                                  \
    IC_TEST_MODEL_OR_SKIP(missing_model_path); \
  }

// decode(encode(s)) is s less the bytes that have no token.
std::string kept_bytes(const Tokenizer& tok, std::string_view s) {
  std::string out;
  for (char c : s)
    if (tok.byte_has_token(static_cast<uint8_t>(c))) out += c;
  return out;
}

TEST(SmolLM2Tokenizer, Metadata) {
  SMOLLM2_OR_SKIP(tok);
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->token_id("<|im_start|>"), 1);
  EXPECT_EQ(tok->token_id("<|im_end|>"), 2);
  EXPECT_EQ(tok->token_id("\xC4\xA0the"), 260);  // "Ġthe"
  EXPECT_EQ(tok->token_id("no such token"), -1);
  EXPECT_EQ(tok->piece(504), "The");
  EXPECT_EQ(tok->piece(tok->token_id("\xC4\xA0the")), " the");
  EXPECT_EQ(tok->piece(2), "<|im_end|>");
  int missing = 0;
  for (int b = 0; b < 256; ++b) missing += !tok->byte_has_token(static_cast<uint8_t>(b));
  EXPECT_EQ(missing, 21);
  EXPECT_FALSE(tok->data().chat_template.empty());
}

TEST(SmolLM2Tokenizer, CapitalOfFrance) {
  SMOLLM2_OR_SKIP(tok);
  EXPECT_EQ(tok->encode("The capital of France is"), (std::vector<int32_t>{504, 3575, 282, 4649, 314}));
}

TEST(SmolLM2Tokenizer, MatchesHfTokenizersVectors) {
  SMOLLM2_OR_SKIP(tok);
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/tokenizer_vectors.json");
  ASSERT_TRUE(in) << "tests/data/tokenizer_vectors.json is missing";
  const nlohmann::json j = nlohmann::json::parse(in);
  const auto& vectors = j.at("vectors");
  ASSERT_GT(vectors.size(), 500u);
  int failures = 0;
  for (const auto& v : vectors) {
    const std::string text = v.at("text");
    const bool special = v.at("parse_special");
    const std::vector<int32_t> want = v.at("ids");
    const std::vector<int32_t> got = tok->encode(text, special);
    if (got != want && ++failures <= 10) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << " parse_special " << special << "\n want "
                    << nlohmann::json(want).dump() << "\n got  " << nlohmann::json(got).dump();
    }
    EXPECT_EQ(tok->decode(want), kept_bytes(*tok, text));
  }
  EXPECT_EQ(failures, 0) << "of " << vectors.size();
}

TEST(SmolLM2Tokenizer, SpecialTokensOnlyWhenAsked) {
  SMOLLM2_OR_SKIP(tok);
  const std::string text = "<|im_start|>user\nHi<|im_end|>\n";
  const std::vector<int32_t> with = tok->encode(text, true);
  ASSERT_GE(with.size(), 3u);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(std::count(with.begin(), with.end(), 2), 1);
  const std::vector<int32_t> without = tok->encode(text, false);
  for (int32_t id : without) EXPECT_FALSE(tok->is_control(id)) << id;
  EXPECT_EQ(tok->decode(with), text);
  EXPECT_EQ(tok->decode(without), text);
}

TEST(SmolLM2Tokenizer, RoundTripRandomBytes) {
  SMOLLM2_OR_SKIP(tok);
  std::mt19937 rng(7);
  std::vector<uint8_t> with_token;
  for (int b = 0; b < 256; ++b)
    if (tok->byte_has_token(static_cast<uint8_t>(b))) with_token.push_back(static_cast<uint8_t>(b));
  for (int iter = 0; iter < 400; ++iter) {
    const size_t n = rng() % 64;
    std::string any, ok;
    for (size_t i = 0; i < n; ++i) {
      any += static_cast<char>(rng() & 0xFF);
      ok += static_cast<char>(with_token[rng() % with_token.size()]);
    }
    for (bool special : {false, true}) {
      EXPECT_EQ(tok->decode(tok->encode(ok, special)), ok);
      EXPECT_EQ(tok->decode(tok->encode(any, special)), kept_bytes(*tok, any));
    }
    for (int32_t id : tok->encode(any, false)) ASSERT_FALSE(tok->is_control(id));
  }
  // Invalid UTF-8 forms next to text.
  for (std::string s : {"\xC3", "a\xC3(b", "\xE2\x82 x", "\xED\xA0\x80z", "\x80\x80\x80", "caf\xC3\xA9\xC3",
                        "\xF0\x9F\x98 1"}) {
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
}

TEST(SmolLM2Tokenizer, RoundTripRandomUtf8) {
  SMOLLM2_OR_SKIP(tok);
  std::mt19937 rng(11);
  for (int iter = 0; iter < 400; ++iter) {
    std::string s;
    const size_t n = rng() % 32;
    for (size_t i = 0; i < n; ++i) {
      uint32_t cp;
      switch (rng() % 4) {
        case 0: cp = 0x20 + rng() % 0x5F; break;
        case 1: cp = rng() % 0x800; break;
        case 2: cp = rng() % 0x10000; break;
        default: cp = rng() % 0x110000; break;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else if (cp < 0x800) {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        s += static_cast<char>(0xE0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        s += static_cast<char>(0xF0 | (cp >> 18));
        s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
    EXPECT_EQ(tok->decode(tok->encode(s)), kept_bytes(*tok, s));
  }
}

TEST(Utf8Stream, HoldsBackUnfinishedSequences) {
  Utf8Stream s;
  EXPECT_EQ(s.push("a\xF0\x9F"), "a");
  EXPECT_EQ(s.push("\x98"), "");
  EXPECT_EQ(s.push("\x80!"), "\xF0\x9F\x98\x80!");
  EXPECT_EQ(s.push("\xE4\xB8"), "");
  EXPECT_EQ(s.flush(), "\xE4\xB8");  // the end of output releases it
  EXPECT_EQ(s.push("\xFF\x80x"), "\xFF\x80x");  // invalid bytes pass through
  EXPECT_EQ(s.push("\xC3"), "");
  EXPECT_EQ(s.push("("), "\xC3(");  // a broken sequence is released once it cannot complete
  EXPECT_EQ(s.flush(), "");
}

TEST(SmolLM2Tokenizer, StreamsTokensAsWholeCharacters) {
  SMOLLM2_OR_SKIP(tok);
  const std::string text = "Emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD, CJK \xE4\xBD\xA0\xE5\xA5\xBD, "
                           "caf\xC3\xA9 \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7";
  Utf8Stream stream;
  std::string joined;
  int chunks = 0;
  for (int32_t id : tok->encode(text)) {
    const std::string chunk = stream.push(tok->piece(id));
    for (size_t pos = 0; pos < chunk.size();) {
      const unicode::Decoded d = unicode::decode_utf8(chunk, pos);
      ASSERT_NE(d.cp, unicode::kInvalidCodepoint) << "chunk " << chunks << " splits a character";
      pos += d.len;
    }
    joined += chunk;
    ++chunks;
  }
  joined += stream.flush();
  EXPECT_EQ(joined, text);
}

// Round trip of a megabyte of pseudo-English; its speed is reported here but judged only in the
// benchmark (bench/bench_tokenizer.cpp), never by a timed test.
TEST(SmolLM2Tokenizer, EncodesAMegabyteRoundTrip) {
  SMOLLM2_OR_SKIP(tok);
  // Pseudo-English: 5,000 distinct words with a Zipf-like skew, punctuation, digits, newlines.
  std::mt19937 rng(3);
  const std::string letters = "etaoinshrdlcumwfgypbvkjxqz";
  std::vector<std::string> words;
  for (int w = 0; w < 5000; ++w) {
    std::string s;
    const int len = 1 + static_cast<int>(rng() % 9);
    for (int k = 0; k < len; ++k) s += letters[std::min<size_t>(rng() % 26, rng() % 26)];
    words.push_back(s);
  }
  std::string text;
  while (text.size() < (1u << 20)) {
    const size_t w = std::min<size_t>(rng() % words.size(), rng() % words.size());
    text += words[w];
    const uint32_t r = rng() % 20;
    text += r == 0 ? ". " : r == 1 ? ", " : r == 2 ? "\n" : r == 3 ? " 19" : " ";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->encode(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok->decode(ids), text);
  std::printf("[ perf     ] encoded %zu bytes into %zu tokens in %.3f s (%.1f MB/s)\n", text.size(), ids.size(),
              s, text.size() / s / 1e6);
}

}  // namespace
}  // namespace ic
