#include "io/utf8_stream.h"

#include <cstdint>

namespace ic {
namespace {

// Length of the sequence a lead byte announces; 0 for ASCII, continuation and invalid bytes.
size_t sequence_length(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

}  // namespace

std::string Utf8Stream::push(std::string_view bytes) {
  pending_ += bytes;
  size_t cut = pending_.size();
  // Walk back over trailing continuation bytes to the lead byte, if it is near the end.
  for (size_t back = 1; back <= 4 && back <= pending_.size(); ++back) {
    const size_t i = pending_.size() - back;
    const uint8_t b = static_cast<uint8_t>(pending_[i]);
    if ((b & 0xC0) == 0x80) continue;
    const size_t len = sequence_length(b);
    if (len > back) cut = i;  // announced more bytes than have arrived
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace ic
