#pragma once
// Where a tensor lives. Operations dispatch on it; the CPU build knows CUDA only by name.
#include <string_view>

namespace ic {

enum class Device { CPU, CUDA };

inline std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// True when this build has the CUDA backend compiled in.
constexpr bool cuda_compiled() {
#ifdef IC_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// True when the CUDA backend is compiled in and a GPU can be used.
bool cuda_available();

}  // namespace ic

namespace ic {
// Called by operation fronts when a CUDA tensor reaches a build without the backend.
[[noreturn]] void fail_no_cuda(const char* op);
}  // namespace ic
