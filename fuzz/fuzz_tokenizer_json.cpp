// libFuzzer target for the HF tokenizer.json reader (io/tokenizer_json.h) and the Tokenizer built
// from it. An input is tokenizer.json's text, optionally followed by a NUL byte and
// tokenizer_config.json's text, and optionally by another NUL byte and a text to encode. It must
// either load or throw ic::Error; anything else (a crash, a sanitizer report, another exception
// type) is a finding. A tokenizer that loads encodes and decodes a fixed text and the input's
// text with both parse_special settings, and must give back exactly their bytes (less any byte
// the vocabulary has no token for, which HF drops too).
//
// Seeds: fuzz/corpus/tokenizer_json/ holds small valid files (about 300 tokens) of each
// supported pre-tokenizer, written by scripts/make-tokenizer-json-vectors --fuzz-seeds.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer_json.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Every class the pre-tokenizers tell apart: ASCII words and contractions, numbers of several
// lengths, CJK and kana, marks, emoji, whitespace runs with newlines, controls, invalid UTF-8.
// No character of U+0080..U+0143: an added token made of those decodes to other bytes (HF's
// ByteLevel decoder does the same), and the round trip below could not hold.
constexpr std::string_view kText =
    "Hello, world! It's 12345 o'clock.\n\n  def f(x):\r\n\treturn x**2  \n"
    "\xE4\xB8\xAD\xE6\x96\x87 \xE3\x81\x8B\xE3\x82\x99 \xE3\x82\xA2\xE3\x83\xBB "  // 中文 か゛ ア・
    "cafe\xCC\x81 \xF0\x9F\x98\x80\xF0\x9F\x91\x8D \xD9\xA3\xD9\xA4 "            // café 😀👍 ٣٤
    "\x01\x7F \xFF\xFE\xC3 end   ";                                               // controls, invalid bytes

std::string without_untokenized(const ic::Tokenizer& tk, std::string_view s) {
  std::string out;
  for (const char c : s)
    if (tk.byte_has_token(static_cast<uint8_t>(c))) out += c;
  return out;
}

void exercise(const ic::Tokenizer& tk, std::string_view text) {
  // The round trip holds when every added token the text holds decodes to its own text (for
  // kText, any will).
  bool added_decode_as_text = true;
  for (int64_t id = 0; id < tk.vocab_size(); ++id) {
    const int32_t type = tk.data().token_types.empty() ? ic::kTokenNormal : tk.data().token_types[id];
    const std::string& t = tk.data().tokens[id];
    if ((type == ic::kTokenControl || type == ic::kTokenUserDefined) && text.find(t) != std::string_view::npos)
      added_decode_as_text &= tk.piece(static_cast<int32_t>(id)) == t;
  }
  for (const bool parse_special : {true, false}) {
    const std::vector<int32_t> ids = tk.encode(text, parse_special);
    for (const int32_t id : ids) check(id >= 0 && id < tk.vocab_size());
    const std::string back = tk.decode(ids);
    if (added_decode_as_text) check(without_untokenized(tk, back) == without_untokenized(tk, text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // json NUL config NUL text: each part optional.
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const size_t nul2 = nul == std::string_view::npos ? nul : in.find('\0', nul + 1);
  const std::string json(in.substr(0, nul));
  const std::string config = nul == std::string_view::npos ? std::string() : std::string(in.substr(nul + 1, nul2 - nul - 1));
  const std::string_view text = nul2 == std::string_view::npos ? std::string_view() : in.substr(nul2 + 1);
  try {
    const ic::Tokenizer tk(ic::tokenizer_data_from_json(json, config));
    exercise(tk, kText);
    if (!text.empty()) exercise(tk, text);
  } catch (const ic::Error&) {
  }
  return 0;
}
