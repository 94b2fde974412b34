#include "io/unicode_categories.h"

#include <algorithm>

#include "io/unicode.h"

namespace ic::unicode {

Category category(uint32_t cp) {
  // ASCII: the 32 printable non-alphanumerics are punctuation or symbols, nothing is a mark.
  if (cp < 0x80) {
    const bool alnum = (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z');
    return cp > 0x20 && cp < 0x7F && !alnum ? Category::PunctSymbol : Category::None;
  }
  if (cp == kInvalidCodepoint) return Category::None;
  const CategoryRange* begin = kCategoryRanges;
  const CategoryRange* end = kCategoryRanges + kCategoryRangeCount;
  const CategoryRange* it =
      std::upper_bound(begin, end, cp, [](uint32_t c, const CategoryRange& r) { return c < r.first; });
  if (it == begin) return Category::None;
  --it;
  return cp <= it->last ? it->cat : Category::None;
}

}  // namespace ic::unicode
