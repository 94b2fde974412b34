#include "io/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "io/unicode.h"
#include "io/unicode_categories.h"

namespace ic {
namespace {

using unicode::Category;
using unicode::CharClass;

struct Char {
  uint32_t cp;
  uint32_t offset;  // byte offset in the text
  CharClass cls;
  Category cat;     // set for the pre-tokenizers that need it, else None
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

// Character tests shared by the DeepSeek-V3 and GLM-4 regexes, over chars [.., end) of `cs`:
// past `end` every test is false, which is how a stretch's end acts as the end of text.
struct Cursor {
  const std::vector<Char>& cs;
  size_t end;

  uint32_t cp(size_t i) const { return i < end ? cs[i].cp : unicode::kInvalidCodepoint; }
  bool is(size_t i, CharClass c) const { return i < end && cs[i].cls == c; }
  bool is(size_t i, Category c) const { return i < end && cs[i].cat == c; }
  bool newline(size_t i) const { return cp(i) == '\r' || cp(i) == '\n'; }
  bool letter_or_mark(size_t i) const { return is(i, CharClass::Letter) || is(i, Category::Mark); }
  bool punct(size_t i) const { return is(i, Category::PunctSymbol); }
  template <typename Pred>
  size_t run(size_t i, Pred pred) const {
    while (i < end && pred(i)) ++i;
    return i;
  }

  // \s*[\r\n]+|\s+(?!\S)|\s+ at a whitespace char i. The first alternative backtracks \s* to
  // the run's last newline, so it ends just after that newline; without a newline the run
  // goes whole at the stretch's end, else all but its last char (a lone char stays one).
  size_t space_run(size_t i) const {
    const size_t k = run(i, [&](size_t m) { return is(m, CharClass::Space); });
    for (size_t m = k; m > i; --m)
      if (newline(m - 1)) return m;
    return (k == end || k - i == 1) ? k : k - 1;
  }
};

// The match of DeepSeek-V3's third regex at char i (see pretokenize.h), or i if none starts there.
size_t match_deepseek_v3(const Cursor& c, size_t i) {
  const auto ascii_letter = [&](size_t m) {
    const uint32_t x = c.cp(m);
    return (x >= 'a' && x <= 'z') || (x >= 'A' && x <= 'Z');
  };
  // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ : those are exactly ASCII's \p{P} and \p{S}.
  if (c.cp(i) < 0x80 && c.punct(i) && ascii_letter(i + 1)) return c.run(i + 1, ascii_letter);
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : a mark at i is taken by either part, so the match is
  // the letter/mark run from i, or from i + 1 after one other char.
  const auto lm = [&](size_t m) { return c.letter_or_mark(m); };
  if (lm(i)) return c.run(i, lm);
  if (!c.newline(i) && !c.punct(i) && lm(i + 1)) return c.run(i + 1, lm);
  //  ?[\p{P}\p{S}]+[\r\n]*
  const size_t k = (c.cp(i) == ' ' && c.punct(i + 1)) ? i + 1 : i;
  if (c.punct(k)) {
    const size_t p = c.run(k, [&](size_t m) { return c.punct(m); });
    return c.run(p, [&](size_t m) { return c.newline(m); });
  }
  if (c.is(i, CharClass::Space)) return c.space_run(i);
  return i;  // numbers, controls, format chars, unassigned, invalid bytes: left to the gap
}

// The match of the GLM-4 regex at char i (see pretokenize.h); every char starts one.
size_t match_glm4(const Cursor& c, size_t i) {
  const auto lower = [&](size_t m) {
    const uint32_t x = c.cp(m);
    return x >= 'A' && x <= 'Z' ? x + 32 : x;
  };
  // (?i:'s|'t|'re|'ve|'m|'ll|'d); Oniguruma folds U+017F (long s) to s, and nothing else to
  // these letters (checked over every code point against HF tokenizers).
  if (c.cp(i) == '\'') {
    const uint32_t a = lower(i + 1), b = lower(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd' || a == 0x17F) return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  const auto letter = [&](size_t m) { return c.is(m, CharClass::Letter); };
  if (letter(i)) return c.run(i, letter);
  if (!c.newline(i) && !c.is(i, CharClass::Number) && letter(i + 1)) return c.run(i + 1, letter);
  // \p{N}{1,3}
  if (c.is(i, CharClass::Number)) {
    size_t k = i + 1;
    while (k < i + 3 && c.is(k, CharClass::Number)) ++k;
    return k;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const auto other = [&](size_t m) { return c.is(m, CharClass::Other); };
  const size_t k = (c.cp(i) == ' ' && other(i + 1)) ? i + 1 : i;
  if (other(k)) return c.run(c.run(k, other), [&](size_t m) { return c.newline(m); });
  IC_ASSERT(c.is(i, CharClass::Space));
  return c.space_run(i);
}

// An "Isolated" split of chars [begin, end) by `match`: each match is a piece, and so is each
// stretch of text between matches.
template <typename Match>
void split_isolated(std::string_view text, const std::vector<Char>& cs, size_t begin, size_t end, Match match,
                    std::vector<std::string_view>& out) {
  const Cursor c{cs, end};
  const auto emit = [&](size_t a, size_t b) { out.push_back(text.substr(cs[a].offset, cs[b].offset - cs[a].offset)); };
  size_t gap = begin;
  for (size_t i = begin; i < end;) {
    const size_t j = match(c, i);
    if (j == i) {
      ++i;
      continue;
    }
    if (gap < i) emit(gap, i);
    emit(i, j);
    i = j;
    gap = j;
  }
  if (gap < end) emit(gap, end);
}

bool deepseek_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);  // U+3040-309F, U+30A0-30FF
}

// DeepSeek-V3's three splits in turn. Number pieces skip the other two: neither regex 2 nor
// regex 3 matches a \p{N}, so they would come back whole.
void split_deepseek_v3(std::string_view text, const std::vector<Char>& cs, size_t n,
                       std::vector<std::string_view>& out) {
  const auto emit = [&](size_t a, size_t b) { out.push_back(text.substr(cs[a].offset, cs[b].offset - cs[a].offset)); };
  // Regex 2 then 3 over a stretch without numbers.
  const auto split_words = [&](size_t begin, size_t end) {
    size_t i = begin;
    while (i < end) {
      const bool cjk = deepseek_cjk(cs[i].cp);
      size_t j = i + 1;
      while (j < end && deepseek_cjk(cs[j].cp) == cjk) ++j;
      split_isolated(text, cs, i, j, match_deepseek_v3, out);
      i = j;
    }
  };
  size_t begin = 0;
  for (size_t i = 0; i < n;) {
    if (cs[i].cls != CharClass::Number) {
      ++i;
      continue;
    }
    split_words(begin, i);
    size_t j = i;
    while (j < n && cs[j].cls == CharClass::Number) ++j;
    for (size_t k = i; k < j; k += 3) emit(k, std::min(k + 3, j));
    begin = i = j;
  }
  split_words(begin, n);
}

}  // namespace

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  if (name == "smollm") return PreTokenizer::Smollm;
  if (name == "gpt2" || name == "gpt-2") return PreTokenizer::Gpt2;
  if (name == "deepseek-v3") return PreTokenizer::DeepseekV3;
  if (name == "glm4") return PreTokenizer::Glm4;
  fail("tokenizer: pre-tokenizer '{}' (tokenizer.ggml.pre) is not supported; supported: smollm, gpt2, "
       "deepseek-v3, glm4",
       name);
}

void pretokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out) {
  IC_CHECK(text.size() <= UINT32_MAX, "tokenizer: text of {} bytes is too long (4 GiB at most)",
           text.size());
  // Only DeepSeek-V3's regex tells marks and punctuation from other chars; the others skip the lookup.
  const bool categories = kind == PreTokenizer::DeepseekV3;
  std::vector<Char> cs;
  cs.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, pos);
    cs.push_back({d.cp, static_cast<uint32_t>(pos), unicode::char_class(d.cp),
                  categories ? unicode::category(d.cp) : Category::None});
    pos += d.len;
  }
  // Sentinel: its offset closes the last piece.
  cs.push_back({unicode::kInvalidCodepoint, static_cast<uint32_t>(text.size()), CharClass::Other, Category::None});
  const size_t n = cs.size() - 1;
  switch (kind) {
    case PreTokenizer::Gpt2: split_gpt2(text, cs, 0, n, out); return;
    case PreTokenizer::DeepseekV3: split_deepseek_v3(text, cs, n, out); return;
    case PreTokenizer::Glm4: split_isolated(text, cs, 0, n, match_glm4, out); return;
    case PreTokenizer::Smollm: break;
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
