#include "ops/attention.h"

#include "core/error.h"

namespace ic::ops {

void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_pos0, float scale,
               Tensor& out, Tensor* lse, ThreadPool* pool) {
  const Device dev = q.device();
  check_tensor(q, "attention q", DType::F32, dev, 3);
  check_tensor(k, "attention k", DType::F32, dev, 3);
  check_tensor(v, "attention v", DType::F32, dev, 3);
  check_tensor(out, "attention out", DType::F32, dev, 3);
  IC_CHECK(k.shape() == v.shape(), "attention: k {} and v {} differ", k.desc(), v.desc());
  IC_CHECK(out.shape() == q.shape(), "attention: out {} must match q {}", out.desc(), q.desc());
  IC_CHECK(k.dim(2) == q.dim(2), "attention: head dims differ, q {} k {}", q.desc(), k.desc());
  IC_CHECK(k.dim(0) > 0 && q.dim(1) % k.dim(0) == 0,
           "attention: {} query heads are not a multiple of {} KV heads", q.dim(1), k.dim(0));
  IC_CHECK(q_pos0 >= 0 && q_pos0 + q.dim(0) <= k.dim(1),
           "attention: queries at positions [{}, {}) exceed the KV capacity {}", q_pos0,
           q_pos0 + q.dim(0), k.dim(1));
  float* lse_ptr = nullptr;
  if (lse && lse->defined()) {
    check_tensor(*lse, "attention lse", DType::F32, dev, 2);
    IC_CHECK(lse->dim(0) == q.dim(0) && lse->dim(1) == q.dim(1), "attention: lse {} for q {}",
             lse->desc(), q.desc());
    lse_ptr = lse->data<float>();
  }
  const AttentionParams p{q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                          lse_ptr,         q.dim(0),        q.dim(1),        k.dim(0),
                          q.dim(2),        k.dim(1),        q_pos0,          scale,
                          pool};
  if (dev == Device::CPU) return cpu::attention(p);
#ifdef IC_WITH_CUDA
  cuda::attention(p);
#else
  fail_no_cuda("attention");
#endif
}

}  // namespace ic::ops
