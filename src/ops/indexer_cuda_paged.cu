// Instantiations of the indexer score kernel: e4m3 keys in the paged indexer cache, one query
// per sequence (indexer_cuda_kernel.cuh).
#include "ops/indexer_cuda_kernel.cuh"

namespace ic::ops::cuda::indexer_detail {

void launch_paged_fp8(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const PagedKeys& keys, dim3 grid) {
  dispatch_shape<1>(n_heads, head_dim,
                    [&]<int HT, int RB>() { launch_score_kernel<HT, RB, false, 1>(a, keys, grid); });
}

}  // namespace ic::ops::cuda::indexer_detail
