#include <cstring>

#include "core/dtype.h"
#include "ops/elementwise.h"
#include "ops/simd.h"

namespace ic::ops::cpu {

void to_bf16(const ToBf16Params& p) {
  for (int64_t i = 0; i < p.n; ++i) p.dst[i] = f32_to_bf16(p.src[i]);
}

IC_SIMD_CLONES
void add_inplace(const AddParams& p) {
  for (int64_t i = 0; i < p.n; ++i) p.a[i] += p.b[i];
}

void kv_store(const KvStoreParams& p) {
  for (int64_t t = 0; t < p.n_tok; ++t)
    for (int64_t g = 0; g < p.n_kv_heads; ++g)
      std::memcpy(p.cache + (g * p.capacity + p.pos0 + t) * p.head_dim,
                  p.src + (t * p.n_kv_heads + g) * p.head_dim, sizeof(float) * p.head_dim);
}

}  // namespace ic::ops::cpu
