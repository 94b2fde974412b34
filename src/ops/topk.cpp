#include "ops/topk.h"

#include <limits>

#include "core/error.h"

namespace ic::ops {
namespace {

void run_topk(const TopkParams& p, Device dev) {
  if (dev == Device::CPU) return cpu::topk(p);
#ifdef IC_WITH_CUDA
  return cuda::topk(p);
#else
  fail_no_cuda("topk");
#endif
}

void check_topk(const Tensor& scores, const Tensor& out) {
  const Device dev = scores.device();
  check_tensor(scores, "topk scores", DType::F32, dev, 2);
  check_tensor(out, "topk out", DType::I32, dev, 2);
  IC_CHECK(out.dim(0) == scores.dim(0), "topk: out {} has a row per query of scores {}", out.desc(),
           scores.desc());
  IC_CHECK(out.dim(1) >= 1, "topk: k must be at least 1, out is {}", out.desc());
  IC_CHECK(scores.dim(1) <= std::numeric_limits<int32_t>::max(),
           "topk: {} keys do not fit int32 indices", scores.dim(1));
}

}  // namespace

void topk(const Tensor& scores, int64_t q_pos0, Tensor& out) {
  check_topk(scores, out);
  IC_CHECK(q_pos0 >= 0 && q_pos0 + scores.dim(0) <= scores.dim(1),
           "topk: queries at positions [{}, {}) need more than the {} score columns", q_pos0,
           q_pos0 + scores.dim(0), scores.dim(1));
  run_topk({scores.data<float>(), out.data<int32_t>(), scores.dim(0), scores.dim(1), q_pos0, out.dim(1)},
           scores.device());
}

void topk(const Tensor& scores, const Tensor& lengths, Tensor& out) {
  check_topk(scores, out);
  const Device dev = scores.device();
  check_tensor(lengths, "topk lengths", DType::I32, dev, 1);
  IC_CHECK(lengths.dim(0) == scores.dim(0), "topk: lengths {} needs one entry per row of scores {}",
           lengths.desc(), scores.desc());
  if (dev == Device::CPU)
    for (int64_t t = 0; t < lengths.dim(0); ++t)
      IC_CHECK(lengths.data<int32_t>()[t] >= 0 && lengths.data<int32_t>()[t] <= scores.dim(1),
               "topk: row {} has length {}, outside [0, {}]", t, lengths.data<int32_t>()[t], scores.dim(1));
  TopkParams p{scores.data<float>(), out.data<int32_t>(), scores.dim(0), scores.dim(1), 0, out.dim(1)};
  p.lengths = lengths.data<int32_t>();
  run_topk(p, dev);
}

}  // namespace ic::ops
