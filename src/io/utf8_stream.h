#pragma once
// Streaming output of generated tokens: a token's bytes may end inside a UTF-8 sequence (byte-level
// BPE splits emoji and CJK characters across tokens), so printing pieces one by one as they come
// would show broken characters. Utf8Stream holds back an unfinished sequence until it completes.
#include <string>
#include <string_view>

namespace ic {

class Utf8Stream {
 public:
  // Appends `bytes` and returns the longest prefix of what is pending that does not end inside a
  // UTF-8 sequence that may still complete (at most 3 bytes are held back). Invalid bytes are
  // passed through as they are, never dropped.
  std::string push(std::string_view bytes);
  // Whatever is still held back (an unfinished sequence at the end of the output).
  std::string flush();

 private:
  std::string pending_;
};

}  // namespace ic
