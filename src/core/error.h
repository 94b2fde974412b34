#pragma once
// One error model: library code throws ic::Error with a message that says what, where
// and why; it never exits or aborts on bad input. IC_ASSERT is for programmer errors.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ic {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throw an ic::Error formatted with fmt: fail("bad magic in {}", path).
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ic

// Check a condition on input data; throws ic::Error with the formatted message.
#define IC_CHECK(cond, ...)                   \
  do {                                        \
    if (!(cond)) ::ic::fail(__VA_ARGS__);     \
  } while (0)

// Programmer errors (broken invariants), not bad input.
#define IC_ASSERT(cond)                                                              \
  do {                                                                               \
    if (!(cond))                                                                     \
      ::ic::fail("internal error: {} ({}:{})", #cond, __FILE__, __LINE__);           \
  } while (0)
