#include "ops/elementwise.h"

#include "core/error.h"

namespace ic::ops {

void to_bf16(const Tensor& src, Tensor& dst) {
  check_tensor(src, "to_bf16 src", DType::F32, src.device(), src.rank());
  check_tensor(dst, "to_bf16 dst", DType::BF16, src.device(), src.rank());
  IC_CHECK(src.shape() == dst.shape(), "to_bf16: shapes differ, {} vs {}", src.desc(), dst.desc());
  const ToBf16Params p{src.data<float>(), static_cast<uint16_t*>(dst.raw()), src.numel()};
  if (src.device() == Device::CPU) return cpu::to_bf16(p);
#ifdef IC_WITH_CUDA
  cuda::to_bf16(p);
#else
  fail_no_cuda("to_bf16");
#endif
}

void add_inplace(Tensor& a, const Tensor& b) {
  check_tensor(a, "add a", DType::F32, a.device(), a.rank());
  check_tensor(b, "add b", DType::F32, a.device(), a.rank());
  IC_CHECK(a.shape() == b.shape(), "add: shapes differ, {} vs {}", a.desc(), b.desc());
  const AddParams p{a.data<float>(), b.data<float>(), a.numel()};
  if (a.device() == Device::CPU) return cpu::add_inplace(p);
#ifdef IC_WITH_CUDA
  cuda::add_inplace(p);
#else
  fail_no_cuda("add_inplace");
#endif
}

void kv_store(const Tensor& src, Tensor& cache, int64_t pos0) {
  check_tensor(src, "kv_store src", DType::F32, cache.device(), 3);
  check_tensor(cache, "kv_store cache", DType::F32, cache.device(), 3);
  IC_CHECK(src.dim(1) == cache.dim(0) && src.dim(2) == cache.dim(2),
           "kv_store: src {} does not fit cache {}", src.desc(), cache.desc());
  IC_CHECK(pos0 >= 0 && pos0 + src.dim(0) <= cache.dim(1),
           "kv_store: positions [{}, {}) exceed the cache capacity {}", pos0, pos0 + src.dim(0),
           cache.dim(1));
  const KvStoreParams p{src.data<float>(), cache.data<float>(), src.dim(0), src.dim(1),
                        src.dim(2),        cache.dim(1),        pos0};
  if (cache.device() == Device::CPU) return cpu::kv_store(p);
#ifdef IC_WITH_CUDA
  cuda::kv_store(p);
#else
  fail_no_cuda("kv_store");
#endif
}

}  // namespace ic::ops
