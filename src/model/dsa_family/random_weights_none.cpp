// CPU-only build: the random-weight fills on the GPU say that CUDA is not compiled in. Never
// compiled with -DWITH_CUDA=ON (CMake drops *_none.cpp there).
#include "core/device.h"
#include "model/dsa_family/random_weights.h"

namespace ic::dsa::cuda {

void fill_random_bf16(uint16_t*, int64_t, uint64_t, float, int64_t, double) { fail_no_cuda("fill_random_bf16"); }
void fill_random_f32(float*, int64_t, uint64_t, float, int64_t, double) { fail_no_cuda("fill_random_f32"); }
void fill_value_f32(float*, int64_t, float) { fail_no_cuda("fill_value_f32"); }
void uk_transpose(const uint16_t*, int64_t, int64_t, int64_t, int64_t, uint16_t*) { fail_no_cuda("uk_transpose"); }

}  // namespace ic::dsa::cuda
