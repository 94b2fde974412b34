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
#ifdef __CUDACC__
// nvcc's C++20 front end cannot evaluate fmt's consteval format-string check, so CUDA sources
// check the format when it is used instead (a different signature: no ODR clash).
template <typename... Args>
[[noreturn]] void fail(fmt::string_view f, const Args&... args) {
  throw Error(fmt::vformat(f, fmt::make_format_args(args...)));
}
#else
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}
#endif

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
