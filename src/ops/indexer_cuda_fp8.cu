// Instantiations of the indexer score kernel: dense e4m3 keys (indexer_cuda_kernel.cuh).
#include "ops/indexer_cuda_kernel.cuh"

namespace ic::ops::cuda::indexer_detail {

void launch_dense_fp8(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const DenseKeys& keys, dim3 grid) {
  dispatch_shape<1>(n_heads, head_dim, [&]<int HT, int RB>() {
    launch_score_kernel<HT, RB, false, queries_per_warp(HT, RB, false)>(a, keys, grid);
  });
}

}  // namespace ic::ops::cuda::indexer_detail
