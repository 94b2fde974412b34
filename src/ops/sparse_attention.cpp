#include "ops/sparse_attention.h"

#include <vector>

#include "core/error.h"

namespace ic::ops {

void sparse_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& topk,
                      int64_t q_pos0, float scale, Tensor& out, Tensor* lse, ThreadPool* pool) {
  const Device dev = q.device();
  check_tensor(q, "sparse_attention q", DType::F32, dev, 3);
  const DType kv_type = k.dtype();
  IC_CHECK(kv_type == DType::F32 || kv_type == DType::BF16,
           "sparse_attention: the KV cache must be F32 or BF16, got {}", k.desc());
  check_tensor(k, "sparse_attention k", kv_type, dev, 3);
  check_tensor(v, "sparse_attention v", kv_type, dev, 3);
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
  const bool bf16 = kv_type == DType::BF16;
  SparseAttentionParams p{q.data<float>(), bf16 ? nullptr : k.data<float>(), bf16 ? nullptr : v.data<float>(),
                          topk.data<int32_t>(), out.data<float>(), lse_ptr, q.dim(0), q.dim(1), k.dim(0), q.dim(2),
                          k.dim(1), q_pos0, topk.dim(1), scale};
  p.pool = pool;
  if (bf16) {
    p.k_bf16 = k.data<uint16_t>();
    p.v_bf16 = v.data<uint16_t>();
  }
  if (dev == Device::CPU) {
    if (!bf16) return cpu::sparse_attention(p);
    // The CPU kernels read f32: widen the cache once (exact), then run the f32 path.
    std::vector<float> kf(static_cast<size_t>(k.numel())), vf(kf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      kf[i] = bf16_to_f32(p.k_bf16[i]);
      vf[i] = bf16_to_f32(p.v_bf16[i]);
    }
    p.k = kf.data();
    p.v = vf.data();
    p.k_bf16 = p.v_bf16 = nullptr;
    return cpu::sparse_attention(p);
  }
#ifdef IC_WITH_CUDA
  cuda::sparse_attention(p);
#else
  fail_no_cuda("sparse_attention");
#endif
}

}  // namespace ic::ops
