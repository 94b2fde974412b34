// read_file_bounded, the one whole-file read behind config.json, the safetensors index and
// tokenizer.json: the bytes come back unchanged, and each bad input is an ic::Error naming the
// path.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>

#include "io/mapped_file.h"
#include "test_util.h"

namespace ic {
namespace {

using test::TempDir;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(ReadFileBounded, ReturnsEveryByte) {
  TempDir d("ic_read");
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t n : {size_t{0}, size_t{1}, size_t{4097}}) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = static_cast<char>(byte(rng));  // NULs and high bytes included
    write_bytes(d / "f.bin", bytes);
    EXPECT_EQ(read_file_bounded(d / "f.bin", n), bytes) << n << " bytes, limit exactly the size";
  }
}

TEST(ReadFileBounded, RefusesALargerFileBeforeReading) {
  TempDir d("ic_read");
  write_bytes(d / "big.json", std::string(11, 'x'));
  EXPECT_IC_ERROR(read_file_bounded(d / "big.json", 10, "a config file"),
                  d / "big.json" + " is 11 bytes, more than the 10-byte limit for a config file");
  const std::string msg = test::error_of([&] { read_file_bounded(d / "big.json", 10); });
  EXPECT_TRUE(msg.ends_with("more than the 10-byte limit")) << msg;  // no dangling " for "
}

TEST(ReadFileBounded, MissingFileAndDirectoryNameThePath) {
  TempDir d("ic_read");
  const std::string not_regular = " does not exist or is not a regular file";
  EXPECT_IC_ERROR(read_file_bounded(d / "absent.json", 100), d / "absent.json" + not_regular);
  EXPECT_IC_ERROR(read_file_bounded(d.str(), 100), d.str() + not_regular);
}

}  // namespace
}  // namespace ic
