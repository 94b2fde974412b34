// CPU-only build: the GPU distillation entry points (distill_loss_cuda.cu, teacher_cuda.cu)
// say how to get them. Never compiled with -DWITH_CUDA=ON (CMake drops *_none.cpp there).
#include "core/device.h"
#include "indexcache/distill_loss.h"
#include "indexcache/teacher.h"

namespace ic {

DistillStats distill_loss_cuda(const IndexerConfig&, const IndexerWeights&, const DistillInput&, IndexerWeights*,
                               int64_t) {
  fail_no_cuda("distill_loss_cuda");
}

namespace teacher_detail {
Tensor attention_targets_cuda(const Tensor&, const Tensor&) { fail_no_cuda("attention_targets"); }
void mean_targets_cuda(std::span<const Tensor>, Tensor&) { fail_no_cuda("mean_targets"); }
}  // namespace teacher_detail

}  // namespace ic
