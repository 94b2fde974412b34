#include "ops/sparse_mla.h"

#include "core/error.h"

namespace ic::ops {

void sparse_mla(const Tensor& q, const Tensor& kv, const Tensor& indices, float scale, Tensor& out, Tensor* lse,
                MlaKernel kernel) {
  const Device dev = q.device();
  const bool fp8 = kv.defined() && kv.dtype() == DType::F8_E4M3;
  check_tensor(q, "sparse_mla q", DType::BF16, dev, 3);
  check_tensor(kv, "sparse_mla kv", fp8 ? DType::F8_E4M3 : DType::BF16, dev, 2);
  check_tensor(indices, "sparse_mla indices", DType::I32, dev, 2);
  check_tensor(out, "sparse_mla out", DType::F32, dev, 3);
  IC_CHECK(q.dim(2) == kMlaDimQK, "sparse_mla: q {} needs {} dims per head (512 latent + 64 RoPE)", q.desc(),
           kMlaDimQK);
  IC_CHECK(kv.dim(1) == (fp8 ? kMlaFp8RowBytes : kMlaDimQK), "sparse_mla: kv {} needs {} {} per row", kv.desc(),
           fp8 ? kMlaFp8RowBytes : kMlaDimQK, fp8 ? "bytes (512 e4m3, 4 fp32 scales, 64 bf16)" : "dims");
  IC_CHECK(out.dim(0) == q.dim(0) && out.dim(1) == q.dim(1) && out.dim(2) == kMlaDimV,
           "sparse_mla: out {} must be [{}, {}, {}]", out.desc(), q.dim(0), q.dim(1), kMlaDimV);
  IC_CHECK(indices.dim(0) == q.dim(0), "sparse_mla: indices {} need one row per query of q {}", indices.desc(),
           q.desc());
  float* lse_ptr = nullptr;
  if (lse && lse->defined()) {
    check_tensor(*lse, "sparse_mla lse", DType::F32, dev, 2);
    IC_CHECK(lse->dim(0) == q.dim(0) && lse->dim(1) == q.dim(1), "sparse_mla: lse {} for q {}", lse->desc(),
             q.desc());
    lse_ptr = lse->data<float>();
  }
  SparseMlaParams p{q.data<uint16_t>(), nullptr,  indices.data<int32_t>(), out.data<float>(), lse_ptr, q.dim(0),
                    q.dim(1),           kv.dim(0), indices.dim(1),           scale};
  if (fp8)
    p.kv_fp8 = kv.data<uint8_t>();
  else
    p.kv = kv.data<uint16_t>();
  p.kernel = kernel;
  if (dev == Device::CPU) return cpu::sparse_mla(p);
#ifdef IC_WITH_CUDA
  cuda::sparse_mla(p);
#else
  fail_no_cuda("sparse_mla");
#endif
}

}  // namespace ic::ops
