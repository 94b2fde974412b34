#include "io/pretokenize.h"

#include <cstdint>

#include "core/error.h"
#include "io/unicode.h"

namespace ic {
namespace {

using unicode::CharClass;

struct Char {
  uint32_t cp;
  uint32_t offset;  // byte offset in the text
  CharClass cls;
};

// The GPT-2 regex, hand-compiled, over chars [begin, end) of `cs`; `end` acts as end of text,
// which matters for the (?!\S) look-ahead. `cs[end].offset` is the byte end of the stretch.
void split_gpt2(std::string_view text, const std::vector<Char>& cs, size_t begin, size_t end,
                std::vector<std::string_view>& out) {
  const auto is = [&](size_t i, CharClass c) { return i < end && cs[i].cls == c; };
  const auto cp_at = [&](size_t i) { return i < end ? cs[i].cp : unicode::kInvalidCodepoint; };
  size_t i = begin;
  while (i < end) {
    size_t j = i;
    const uint32_t c = cs[i].cp;
    if (c == '\'') {
      const uint32_t a = cp_at(i + 1), b = cp_at(i + 2);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        j = i + 2;
      } else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        j = i + 3;
      }
    }
    if (j == i) {
      // ` ?X+` for X in letters, numbers, other: an optional U+0020 then a run of one class.
      for (CharClass x : {CharClass::Letter, CharClass::Number, CharClass::Other}) {
        size_t k = (c == ' ' && is(i + 1, x)) ? i + 1 : i;
        if (!is(k, x)) continue;
        while (is(k, x)) ++k;
        j = k;
        break;
      }
    }
    if (j == i) {
      IC_ASSERT(cs[i].cls == CharClass::Space);
      size_t k = i;
      while (is(k, CharClass::Space)) ++k;
      // \s+(?!\S): the whole run at the end of the stretch, else all but its last space (that
      // one goes with the word after it); a single space before a word falls to \s+.
      j = (k == end || k - i == 1) ? k : k - 1;
    }
    out.push_back(text.substr(cs[i].offset, cs[j].offset - cs[i].offset));
    i = j;
  }
}

}  // namespace

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  if (name == "smollm") return PreTokenizer::Smollm;
  if (name == "gpt2" || name == "gpt-2") return PreTokenizer::Gpt2;
  fail("tokenizer: pre-tokenizer '{}' (tokenizer.ggml.pre) is not supported; supported: smollm, gpt2",
       name);
}

void pretokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out) {
  IC_CHECK(text.size() <= UINT32_MAX, "tokenizer: text of {} bytes is too long (4 GiB at most)",
           text.size());
  std::vector<Char> cs;
  cs.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    cs.push_back({d.cp, static_cast<uint32_t>(pos), unicode::char_class(d.cp)});
    pos += d.len;
  }
  // Sentinel: its offset closes the last piece.
  cs.push_back({unicode::kInvalidCodepoint, static_cast<uint32_t>(text.size()), CharClass::Other});
  const size_t n = cs.size() - 1;
  if (kind == PreTokenizer::Gpt2) {
    split_gpt2(text, cs, 0, n, out);
    return;
  }
  size_t begin = 0;
  for (size_t i = 0; i < n; ++i) {
    if (cs[i].cls != CharClass::Number) continue;
    split_gpt2(text, cs, begin, i, out);
    out.push_back(text.substr(cs[i].offset, cs[i + 1].offset - cs[i].offset));
    begin = i + 1;
  }
  split_gpt2(text, cs, begin, n, out);
}

}  // namespace ic
