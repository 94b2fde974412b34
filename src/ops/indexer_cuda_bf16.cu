// Instantiations of the indexer score kernel: dense bf16 keys (indexer_cuda_kernel.cuh).
#include "ops/indexer_cuda_kernel.cuh"

namespace ic::ops::cuda::indexer_detail {

void launch_dense_bf16(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const DenseKeys& keys, dim3 grid) {
  dispatch_shape<2>(n_heads, head_dim, [&]<int HT, int RB>() {
    launch_score_kernel<HT, RB, true, queries_per_warp(HT, RB, true)>(a, keys, grid);
  });
}

}  // namespace ic::ops::cuda::indexer_detail
