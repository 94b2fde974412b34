#pragma once
// Helpers shared by the test files.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "io/pretokenize.h"

namespace ic::test {

// Path of the SmolLM2-135M-Instruct GGUF: $IC_MODEL, else
// $IC_SOURCE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf (env, then the compile definition).
// Returns "" when it is absent; see IC_TEST_MODEL_OR_SKIP for use inside a TEST body.
inline std::string find_test_model() {
  if (const char* m = std::getenv("IC_MODEL"); m && *m)
    return std::filesystem::exists(m) ? std::string(m) : std::string();
  std::string dir;
  if (const char* d = std::getenv("IC_SOURCE_DIR"); d && *d) dir = d;
#ifdef IC_SOURCE_DIR
  if (dir.empty()) dir = IC_SOURCE_DIR;
#endif
  if (dir.empty()) return "";
  const std::string path = dir + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(path) ? path : std::string();
}

// True when a missing model must fail the test instead of skipping it.
inline bool model_required() {
  const char* r = std::getenv("IC_REQUIRE_MODEL");
  return r && std::string(r) == "1";
}

// Records a skip (or a failure under IC_REQUIRE_MODEL=1) for the current test.
inline void skip_or_fail_without_model() {
  if (model_required()) FAIL() << "IC_REQUIRE_MODEL=1 but no model found (set IC_MODEL or add models/)";
  GTEST_SKIP() << "model not found (set IC_MODEL or add models/)";
}

// Function form for a TEST body; the caller must return on "":
//   const std::string path = ic::test::test_model_path_or_skip();
//   if (path.empty()) return;
inline std::string test_model_path_or_skip() {
  std::string path = find_test_model();
  if (path.empty()) skip_or_fail_without_model();
  return path;
}

// The message of the ic::Error that `f` throws; records a test failure (and returns "") when it
// throws nothing or an exception of another kind.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ic exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

// The function form of EXPECT_IC_ERROR, for a callable built elsewhere: `f` must throw an
// ic::Error whose message contains `part`.
inline void expect_error(const std::function<void()>& f, const std::string& part) {
  const std::string msg = error_of(f);
  EXPECT_NE(msg.find(part), std::string::npos) << "expected \"" << part << "\" in: " << msg;
}

// A fresh directory under the system temp folder, named after the running test (`prefix` tells
// the test files apart), removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "ic") {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = std::filesystem::temp_directory_path() /
           fmt::format("{}_{}_{}_{}_{}", prefix, ::getpid(), info ? info->test_suite_name() : "",
                       info ? info->name() : "", counter++);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path.string(); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// The pieces `kind` splits `text` into, as strings; records a failure unless they cover it.
inline std::vector<std::string> pieces(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> views;
  pretokenize(kind, text, views);
  std::string joined;
  for (auto v : views) joined += v;
  EXPECT_EQ(joined, text) << "pieces must cover the text";
  return {views.begin(), views.end()};
}

// The 256 byte tokens of a GPT-2 byte-level vocabulary, in byte order, written out from
// bytes_to_unicode's definition (printable Latin-1 bytes stand for themselves, the other 68 for
// U+0100.. in order), independently of io/tokenizer.cpp.
inline std::vector<std::string> byte_level_tokens() {
  std::vector<std::string> tokens;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    tokens.push_back(s);
  }
  return tokens;
}

}  // namespace ic::test

// Expects `stmt` to throw an ic::Error whose message contains `substr` (a std::string or a
// C string).
#define EXPECT_IC_ERROR(stmt, substr)                                                           \
  do {                                                                                          \
    const std::string msg_ = ::ic::test::error_of([&] { stmt; });                               \
    EXPECT_NE(msg_.find(substr), std::string::npos) << "expected \"" << (substr) << "\" in: " << msg_; \
  } while (0)

// Inside a TEST body: declares `const std::string var` holding the model path, or skips the
// test when the model is absent (fails instead when IC_REQUIRE_MODEL=1). A macro because
// GTEST_SKIP/FAIL must return from the test body itself.
#define IC_TEST_MODEL_OR_SKIP(var)                                                        \
  const std::string var = ::ic::test::find_test_model();                                  \
  if (var.empty()) {                                                                      \
    if (::ic::test::model_required()) FAIL() << "IC_REQUIRE_MODEL=1 but no model found "  \
                                                "(set IC_MODEL or add models/)";          \
    GTEST_SKIP() << "model not found (set IC_MODEL or add models/)";                      \
  }
