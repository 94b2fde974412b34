#pragma once
// A read-only view of a whole file's bytes, memory-mapped (or an owned buffer for tests and
// fuzzers), kept alive by a shared owner so tensors borrowed from it can outlive the reader.
#include <cstdint>
#include <memory>
#include <string>
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

}  // namespace ic
