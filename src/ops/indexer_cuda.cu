// The lightning indexer on the GPU: launch planning, the checks of what is compiled, the
// chunked indexer + top-k, and the paged decode step. The kernel is indexer_cuda_kernel.cuh;
// its instantiations are indexer_cuda_{fp8,bf16,paged}.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/cuda_check.h"
#include "ops/indexer.h"
#include "ops/indexer_cuda_kernel.cuh"
#include "ops/topk.h"

namespace ic::ops::cuda {

namespace {

using namespace indexer_detail;

void check_supported(const char* op, DType dt, int64_t n_heads, int64_t head_dim) {
  IC_CHECK(dt == DType::F8_E4M3 || dt == DType::BF16,
           "{} (cuda): dtype {} is not supported (supported: F8_E4M3, BF16)", op, dtype_name(dt));
  IC_CHECK(indexer_shape_supported(n_heads, head_dim),
           "{} (cuda): n_heads {} x head_dim {} is not compiled (supported: n_heads 1 to 64, run as "
           "16, 32 or 64 with zero-weight padding heads; head_dim 64 or 128)",
           op, n_heads, head_dim);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// Keep freed stream-ordered memory in the device's default pool. By default the pool gives it
// back at each synchronisation, and the next cudaMallocAsync maps it again: about 100 us per
// call, which was most of a decode top-k's time (bench/RESULTS.md).
void keep_pool_memory() {
  int device = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  cudaMemPool_t pool;
  IC_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = UINT64_MAX;
  IC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
}

int device_sms() {
  int device = 0, sms = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

struct Plan {
  int wq;         // warps along queries
  int64_t chunk;  // keys per block along grid.y
  dim3 grid;
};

// Blocks of wq x kq queries along x; keys split along y until there are about four blocks per
// multiprocessor (decode: one query, so mostly along y). Depends on the shapes only.
// one_per_block: paged decode, a block per sequence (wq = kq = 1).
Plan plan_launch(int64_t queries, int kq, int64_t max_end, bool one_per_block = false) {
  Plan pl;
  pl.wq = one_per_block ? 1 : kWarps;
  while (pl.wq > 1 && (pl.wq / 2) * kq >= queries) pl.wq /= 2;
  const int64_t per_block = int64_t{pl.wq} * kq;
  const int64_t bx = (queries + per_block - 1) / per_block;
  const int64_t want_y = std::max<int64_t>(1, (4 * device_sms() + bx - 1) / bx);
  int64_t chunk = (max_end + want_y - 1) / want_y;
  chunk = std::clamp<int64_t>((chunk + kTileKeys - 1) / kTileKeys * kTileKeys, 2 * kTileKeys, 64 * kTileKeys);
  const int64_t by = std::max<int64_t>(1, (max_end + chunk - 1) / chunk);
  IC_CHECK(bx <= INT32_MAX && by <= 65535, "indexer (cuda): grid {} x {} is too large", bx, by);
  pl.chunk = chunk;
  pl.grid = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  return pl;
}

// The wgmma kernel for its shapes (fp8, head_dim 128, 32 or 64 heads) on a Hopper GPU, unless
// IC_INDEXER_WGMMA=0 asks for the mma.sync kernel. The choice depends on the shape and the
// device only, never on the number of queries, so a query's scores do not depend on how the
// queries are chunked.
bool use_wgmma(const IndexerParams& p) {
  static const bool enabled = [] {
    const char* env = std::getenv("IC_INDEXER_WGMMA");
    if (env && std::string_view(env) == "0") return false;
    int device = 0, major = 0, minor = 0;
    IC_CUDA_CHECK(cudaGetDevice(&device));
    IC_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    IC_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return major == 9 && minor == 0;  // built for sm_90a
  }();
  return enabled && p.dtype == DType::F8_E4M3 && wgmma_shape_supported(p.n_heads, p.head_dim);
}

// The wgmma launch: blocks of 256 / H queries along x, keys split along y until there are about
// two blocks per multiprocessor (one runs at a time), chunks of 512 to 8192 keys.
Plan plan_wgmma(int64_t queries, int64_t n_heads, int64_t max_end) {
  Plan pl;
  pl.wq = 0;
  const int64_t per_block = wgmma_queries_per_block(n_heads);
  const int64_t bx = (queries + per_block - 1) / per_block;
  const int64_t want_y = std::max<int64_t>(1, (2 * device_sms() + bx - 1) / bx);
  int64_t chunk = (max_end + want_y - 1) / want_y;
  chunk = std::clamp<int64_t>((chunk + 63) / 64 * 64, 512, 8192);
  const int64_t by = std::max<int64_t>(1, (max_end + chunk - 1) / chunk);
  IC_CHECK(bx <= INT32_MAX && by <= 65535, "indexer (cuda): grid {} x {} is too large", bx, by);
  pl.chunk = chunk;
  pl.grid = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  return pl;
}

// Scores of queries [t_begin, t_end) into out[(t - t_begin) * ld + j].
void launch_dense(const IndexerParams& p, int64_t t_begin, int64_t t_end, float* out, int64_t ld) {
  check_supported("indexer_scores", p.dtype, p.n_heads, p.head_dim);
  IC_CHECK(aligned16(p.q) && aligned16(p.k), "indexer (cuda): q and k must be 16-byte aligned");
  IC_CHECK(p.n_keys <= INT32_MAX, "indexer (cuda): {} keys exceed int32 positions", p.n_keys);
  const bool bf16 = p.dtype == DType::BF16;
  const int rb = static_cast<int>(p.head_dim * (bf16 ? 2 : 1));
  const int kq = queries_per_warp(head_tiles(p.n_heads), rb, bf16);
  const bool ragged = p.row_start || p.row_end;
  const int64_t max_end = ragged ? p.n_keys : std::min(p.n_keys, p.q_pos0 + t_end);
  const DenseKeys keys{static_cast<const uint8_t*>(p.k), bf16 ? nullptr : p.k_scale, rb};
  if (use_wgmma(p)) {
    const Plan pl = plan_wgmma(t_end - t_begin, p.n_heads, max_end);
    const ScoreArgs a{static_cast<const uint8_t*>(p.q), p.w, p.row_start, p.row_end, p.q_pos0, p.n_heads,
                      t_begin, t_end, p.n_keys, out, ld, pl.wq, pl.chunk};
    launch_dense_fp8_wgmma(p.n_heads, a, keys, p.n_q, pl.grid);
    return;
  }
  const Plan pl = plan_launch(t_end - t_begin, kq, max_end);
  const ScoreArgs a{static_cast<const uint8_t*>(p.q), p.w, p.row_start, p.row_end, p.q_pos0, p.n_heads,
                    t_begin, t_end, p.n_keys, out, ld, pl.wq, pl.chunk};
  if (bf16)
    launch_dense_bf16(p.n_heads, p.head_dim, a, keys, pl.grid);
  else
    launch_dense_fp8(p.n_heads, p.head_dim, a, keys, pl.grid);
}

__global__ void mask_tails_kernel(float* scores, int64_t n_q, int64_t ld, const int32_t* row_start,
                                  const int32_t* row_end, int64_t q_pos0) {
  for (int64_t t = blockIdx.y; t < n_q; t += gridDim.y) {
    int64_t len = (row_end ? row_end[t] : q_pos0 + t + 1) - (row_start ? row_start[t] : 0);
    len = min(max(len, int64_t{0}), ld);
    for (int64_t j = len + blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < ld; j += int64_t{gridDim.x} * blockDim.x)
      scores[t * ld + j] = -INFINITY;
  }
}

__global__ void row_lengths_kernel(const int32_t* row_start, const int32_t* row_end, int64_t n_q, int64_t limit,
                                   int32_t* len) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t < n_q) {
    const int64_t st = max(int64_t{row_start ? row_start[t] : 0}, int64_t{0});
    const int64_t en = min(int64_t{row_end[t]}, limit);
    len[t] = static_cast<int32_t>(max(en - st, int64_t{0}));
  }
}

}  // namespace

void mask_score_tails(float* scores, int64_t n_q, int64_t ld, const int32_t* row_start, const int32_t* row_end,
                      int64_t q_pos0) {
  if (n_q == 0 || ld == 0) return;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((ld + 255) / 256, 64)),
                  static_cast<unsigned>(std::min<int64_t>(n_q, 65535)));
  mask_tails_kernel<<<grid, 256>>>(scores, n_q, ld, row_start, row_end, q_pos0);
  IC_CUDA_CHECK_LAUNCH();
}

void indexer_scores(const IndexerParams& p, float* scores) {
  if (p.n_q == 0) return;
  launch_dense(p, 0, p.n_q, scores, p.n_keys);
}

// Queries in chunks whose scores fit kIndexerCudaChunkBytes; each chunk is scored, then selected.
void indexer_topk(const IndexerParams& p, int32_t* topk, int64_t k, int64_t chunk_bytes) {
  if (p.n_q == 0) return;
  const bool ragged = p.row_start || p.row_end;
  const int64_t ld = ragged ? p.n_keys : p.q_pos0 + p.n_q;
  const int64_t rows = std::clamp<int64_t>(chunk_bytes / (ld * int64_t{sizeof(float)}), 1, p.n_q);
  void* ws = nullptr;
  const size_t buf_bytes = static_cast<size_t>(rows * ld) * sizeof(float);
  keep_pool_memory();
  IC_CUDA_CHECK(cudaMallocAsync(&ws, buf_bytes + (ragged ? static_cast<size_t>(p.n_q) * sizeof(int32_t) : 0), nullptr));
  float* buf = static_cast<float*>(ws);
  int32_t* len = ragged ? reinterpret_cast<int32_t*>(static_cast<char*>(ws) + buf_bytes) : nullptr;
  if (ragged) {
    IC_CHECK(p.row_end, "indexer_topk (cuda): ragged rows need row_end");
    row_lengths_kernel<<<static_cast<unsigned>((p.n_q + 255) / 256), 256>>>(p.row_start, p.row_end, p.n_q, p.n_keys,
                                                                            len);
    IC_CUDA_CHECK_LAUNCH();
  }
  for (int64_t t0 = 0; t0 < p.n_q; t0 += rows) {
    const int64_t t1 = std::min(p.n_q, t0 + rows);
    launch_dense(p, t0, t1, buf, ld);
    TopkParams tp{buf, topk + t0 * k, t1 - t0, ld, p.q_pos0 + t0, k};
    if (ragged) {
      tp.q_pos0 = 0;
      tp.lengths = len + t0;
    }
    cuda::topk(tp);
  }
  IC_CUDA_CHECK(cudaFreeAsync(ws, nullptr));
}

void indexer_scores_paged(const IndexerPagedParams& p, float* scores) {
  if (p.n_seq == 0) return;
  check_supported("indexer_scores_paged", DType::F8_E4M3, p.n_heads, p.head_dim);
  IC_CHECK(aligned16(p.q) && aligned16(p.cache), "indexer_scores_paged (cuda): q and the cache must be 16-byte aligned");
  const Plan pl = plan_launch(p.n_seq, 1, p.ld, /*one_per_block=*/true);
  const ScoreArgs a{p.q, p.w, nullptr, p.seq_lens, 0, p.n_heads, 0, p.n_seq, p.ld, scores, p.ld, pl.wq, pl.chunk};
  const PagedKeys keys{p.cache, p.block_table, p.max_pages, indexer_page_bytes(p.head_dim), p.head_dim};
  launch_paged_fp8(p.n_heads, p.head_dim, a, keys, pl.grid);
}

void indexer_topk_paged(const IndexerPagedParams& p, int32_t* topk, int64_t k) {
  if (p.n_seq == 0) return;
  void* buf = nullptr;
  keep_pool_memory();
  IC_CUDA_CHECK(cudaMallocAsync(&buf, static_cast<size_t>(p.n_seq * p.ld) * sizeof(float), nullptr));
  indexer_scores_paged(p, static_cast<float*>(buf));
  TopkParams tp{static_cast<float*>(buf), topk, p.n_seq, p.ld, 0, k};
  tp.lengths = p.seq_lens;
  cuda::topk(tp);
  IC_CUDA_CHECK(cudaFreeAsync(buf, nullptr));
}

}  // namespace ic::ops::cuda
