#include "io/unicode.h"

#include <algorithm>

namespace ic::unicode {

CharClass char_class(uint32_t cp) {
  // ASCII dominates real text; answer it without the search.
  if (cp < 0x80) {
    if (cp >= 'a' && cp <= 'z') return CharClass::Letter;
    if (cp >= 'A' && cp <= 'Z') return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::Space;
    return CharClass::Other;
  }
  if (cp == kInvalidCodepoint) return CharClass::Other;
  const CodepointRange* begin = kCodepointRanges;
  const CodepointRange* end = kCodepointRanges + kCodepointRangeCount;
  const CodepointRange* it =
      std::upper_bound(begin, end, cp, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  if (it == begin) return CharClass::Other;
  --it;
  return cp <= it->last ? it->cls : CharClass::Other;
}

Decoded decode_utf8(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1};
  uint32_t len, cp, min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {kInvalidCodepoint, 1};
  }
  if (pos + len > s.size()) return {kInvalidCodepoint, 1};
  for (uint32_t i = 1; i < len; ++i) {
    const uint8_t b = byte(pos + i);
    if ((b & 0xC0) != 0x80) return {kInvalidCodepoint, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {kInvalidCodepoint, 1};
  return {cp, len};
}

}  // namespace ic::unicode
