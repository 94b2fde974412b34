#include "ops/indexer.h"

#include <limits>

#include "core/error.h"

namespace ic::ops {
namespace {

IndexerParams check_indexer(const char* op, const Tensor& q, const Tensor& k, const Tensor& k_scale,
                            const Tensor& w, int64_t q_pos0) {
  const Device dev = q.device();
  IC_CHECK(q.defined(), "{}: q is empty", op);
  const DType dt = q.dtype();
  IC_CHECK(dt == DType::F32 || dt == DType::F8_E4M3, "{}: q must be F32 or F8_E4M3, got {}", op,
           q.desc());
  check_tensor(q, "indexer q", dt, dev, 3);
  check_tensor(k, "indexer k", dt, dev, 2);
  check_tensor(w, "indexer w", DType::F32, dev, 2);
  IC_CHECK(k.dim(1) == q.dim(2), "{}: head dims differ, q {} k {}", op, q.desc(), k.desc());
  IC_CHECK(q.dim(2) >= 1 && q.dim(1) >= 1, "{}: q {} has no heads or no head dims", op, q.desc());
  IC_CHECK(w.dim(0) == q.dim(0) && w.dim(1) == q.dim(1), "{}: w {} must be [n_q, n_heads] of q {}",
           op, w.desc(), q.desc());
  IC_CHECK(q_pos0 >= 0 && q_pos0 + q.dim(0) <= k.dim(0),
           "{}: queries at positions [{}, {}) exceed the {} cached keys", op, q_pos0,
           q_pos0 + q.dim(0), k.dim(0));
  IC_CHECK(k.dim(0) <= std::numeric_limits<int32_t>::max(), "{}: {} keys do not fit int32 indices",
           op, k.dim(0));
  const float* ks = nullptr;
  if (dt == DType::F8_E4M3) {
    IC_CHECK(q.dim(2) <= kFp8BlockSize,
             "{}: fp8 rows share one scale, so head_dim must be <= {}, got {}", op, kFp8BlockSize,
             q.dim(2));
    check_tensor(k_scale, "indexer k_scale", DType::F32, dev, 1);
    IC_CHECK(k_scale.dim(0) == k.dim(0), "{}: k_scale {} needs one scale per key row of k {}", op,
             k_scale.desc(), k.desc());
    ks = k_scale.data<float>();
  } else {
    IC_CHECK(!k_scale.defined(), "{}: k_scale {} given for F32 keys", op, k_scale.desc());
  }
  return IndexerParams{q.raw(), k.raw(), ks, w.data<float>(), dt, q.dim(0), q.dim(1), q.dim(2),
                       k.dim(0), q_pos0};
}

}  // namespace

void indexer_scores(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                    int64_t q_pos0, Tensor& scores) {
  const IndexerParams p = check_indexer("indexer_scores", q, k, k_scale, w, q_pos0);
  check_tensor(scores, "indexer scores", DType::F32, q.device(), 2);
  IC_CHECK(scores.dim(0) == p.n_q && scores.dim(1) == p.n_keys,
           "indexer_scores: scores {} must be [n_q, n_keys] = [{}, {}]", scores.desc(), p.n_q, p.n_keys);
  if (q.device() == Device::CPU) return cpu::indexer_scores(p, scores.data<float>());
#ifdef IC_WITH_CUDA
  // No CUDA kernel yet (the DSA kernels are a later issue); the CUDA build must still link.
  fail("indexer_scores: no CUDA kernel yet; the DSA operations run on the CPU only for now");
#else
  fail_no_cuda("indexer_scores");
#endif
}

void indexer_topk(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                  int64_t q_pos0, Tensor& topk) {
  const IndexerParams p = check_indexer("indexer_topk", q, k, k_scale, w, q_pos0);
  check_tensor(topk, "indexer topk", DType::I32, q.device(), 2);
  IC_CHECK(topk.dim(0) == p.n_q && topk.dim(1) >= 1, "indexer_topk: topk {} must be [n_q = {}, k >= 1]",
           topk.desc(), p.n_q);
  if (q.device() == Device::CPU) return cpu::indexer_topk(p, topk.data<int32_t>(), topk.dim(1));
#ifdef IC_WITH_CUDA
  // No CUDA kernel yet (the DSA kernels are a later issue); the CUDA build must still link.
  fail("indexer_topk: no CUDA kernel yet; the DSA operations run on the CPU only for now");
#else
  fail_no_cuda("indexer_topk");
#endif
}

}  // namespace ic::ops
