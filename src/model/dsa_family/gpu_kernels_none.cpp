// CPU-only build: the DSA family's GPU kernels say that CUDA is not compiled in. Never compiled
// with -DWITH_CUDA=ON (CMake drops *_none.cpp there).
#include "core/device.h"
#include "model/dsa_family/gpu_kernels.h"

namespace ic::dsa::gpu::cuda {

void rope_rows(float*, int64_t, int64_t, int64_t, int64_t, int64_t, const RopeArgs&, int64_t) {
  fail_no_cuda("dsa rope_rows");
}
void kv_rows(const float*, int64_t, int64_t, const float*, float, const RopeArgs&, int64_t, uint16_t*) {
  fail_no_cuda("dsa kv_rows");
}
void split_query(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, uint16_t*, uint16_t*) {
  fail_no_cuda("dsa split_query");
}
void heads_to_tokens(const float*, int64_t, int64_t, int64_t, uint16_t*, int64_t, int64_t) {
  fail_no_cuda("dsa heads_to_tokens");
}
void tokens_to_heads(const float*, int64_t, int64_t, int64_t, uint16_t*) { fail_no_cuda("dsa tokens_to_heads"); }
void causal_indices(int32_t*, int64_t, int64_t, int64_t) { fail_no_cuda("dsa causal_indices"); }
void add_bias(float*, const float*, int64_t, int64_t) { fail_no_cuda("dsa add_bias"); }
void quantize_rows_fp8(const float*, int64_t, int64_t, uint8_t*, float*, float*) {
  fail_no_cuda("dsa quantize_rows_fp8");
}

}  // namespace ic::dsa::gpu::cuda
