#include "ops/sparse_attention.h"

#include "core/error.h"

namespace ic::ops {

void sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& topk,
                      int64_t q_pos0, float scale, Tensor& out, Tensor* lse) {
  const Device dev = q.device();
  check_tensor(q, "sparse_attention q", DType::F32, dev, 3);
  check_tensor(k, "sparse_attention k", DType::F32, dev, 3);
  check_tensor(v, "sparse_attention v", DType::F32, dev, 3);
  check_tensor(topk, "sparse_attention topk", DType::I32, dev, 2);
  check_tensor(out, "sparse_attention out", DType::F32, dev, 3);
  IC_CHECK(k.shape() == v.shape(), "sparse_attention: k {} and v {} differ", k.desc(), v.desc());
  IC_CHECK(out.shape() == q.shape(), "sparse_attention: out {} must match q {}", out.desc(), q.desc());
  IC_CHECK(k.dim(2) == q.dim(2), "sparse_attention: head dims differ, q {} k {}", q.desc(), k.desc());
  IC_CHECK(k.dim(0) > 0 && q.dim(1) % k.dim(0) == 0,
           "sparse_attention: {} query heads are not a multiple of {} KV heads", q.dim(1), k.dim(0));
  IC_CHECK(topk.dim(0) == q.dim(0), "sparse_attention: topk {} needs one row per query of q {}",
           topk.desc(), q.desc());
  IC_CHECK(q_pos0 >= 0 && q_pos0 + q.dim(0) <= k.dim(1),
           "sparse_attention: queries at positions [{}, {}) exceed the KV capacity {}", q_pos0,
           q_pos0 + q.dim(0), k.dim(1));
  float* lse_ptr = nullptr;
  if (lse && lse->defined()) {
    check_tensor(*lse, "sparse_attention lse", DType::F32, dev, 2);
    IC_CHECK(lse->dim(0) == q.dim(0) && lse->dim(1) == q.dim(1), "sparse_attention: lse {} for q {}",
             lse->desc(), q.desc());
    lse_ptr = lse->data<float>();
  }
  const SparseAttentionParams p{q.data<float>(), k.data<float>(), v.data<float>(), topk.data<int32_t>(),
                                out.data<float>(), lse_ptr,    q.dim(0),         q.dim(1),
                                k.dim(0),          q.dim(2),   k.dim(1),         q_pos0,
                                topk.dim(1),       scale};
  if (dev == Device::CPU) return cpu::sparse_attention(p);
#ifdef IC_WITH_CUDA
  // No CUDA kernel yet (the DSA kernels are a later issue); the CUDA build must still link.
  fail("sparse_attention: no CUDA kernel yet; the DSA operations run on the CPU only for now");
#else
  fail_no_cuda("sparse_attention");
#endif
}

}  // namespace ic::ops
