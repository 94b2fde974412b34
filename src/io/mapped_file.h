#pragma once
// A read-only view of a whole file's bytes, memory-mapped (or an owned buffer for tests and
// fuzzers), kept alive by a shared owner so tensors borrowed from it can outlive the reader.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ic {

struct MappedBytes {
  const uint8_t* data = nullptr;  // [size] bytes
  size_t size = 0;
  std::shared_ptr<const void> owner;  // unmaps / frees when the last holder goes

  // `kind` names the format in errors ("cannot open GGUF file x: ..."). Empty files are errors.
  static MappedBytes map(const std::string& path, const char* kind);
  static MappedBytes own(std::vector<uint8_t> bytes);
};

// The whole of a small file (config.json, a safetensors index, tokenizer.json) read into memory,
// refused before reading when it is larger than `limit` bytes, so a hostile file cannot make us
// allocate without bound. `what` completes the size error ("... more than the N-byte limit for
// a config file"; empty: "... limit"). Throws, naming the path: not a regular file, too large,
// cannot open, short read.
std::string read_file_bounded(const std::string& path, uint64_t limit, std::string_view what = "");

}  // namespace ic
