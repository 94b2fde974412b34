// CPU-only build: every CUDA entry point says how to get the backend.
#include "core/cuda_memory.h"
#include "core/error.h"

namespace ic {

bool cuda_available() { return false; }

namespace cuda {
namespace {
[[noreturn]] void no_cuda() { fail("this build has no CUDA backend (configure with -DWITH_CUDA=ON)"); }
}  // namespace
void* alloc(int64_t) { no_cuda(); }
void free(void*) {}
void copy(void*, Device, const void*, Device, int64_t) { no_cuda(); }
void memset_zero(void*, int64_t) { no_cuda(); }
void synchronize() { no_cuda(); }
}  // namespace cuda

}  // namespace ic
