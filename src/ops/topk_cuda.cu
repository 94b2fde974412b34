// Top-k of score rows on the GPU by radix selection, never by sorting a row.
//
// Every entry gets a unique 64-bit composite key, (order_key(score) << 32) | ~index: a larger
// composite is a higher score, or the same score at a lower index, so the canonical top-k is
// simply the k largest composites and ties need no special case. Selection walks the composite
// from its top in 11-bit digits: a 2048-bin histogram of the digit over the entries that still
// match the prefix finds the boundary bucket; buckets above it are selected, the boundary
// bucket is refined on the next digit. Passes over the row in global memory continue until the
// boundary bucket holds at most kCandCap entries; one more pass collects the selected entries
// and that bucket into shared memory, where the remaining digits are resolved. Only the k
// selected composites are sorted (bitonic, in shared memory), for the canonical order.
//
// Many rows (prefill): one block per row, one launch. Few rows (decode): one thread-block
// cluster per row, also one launch: the blocks share the row's passes and sum their histograms
// through distributed shared memory, then block 0 finishes. The result depends only on the
// scores: composites are unique, and the selected set is sorted before it is written.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>

#include "core/cuda_check.h"
#include "ops/topk.h"

namespace ic::ops::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kBins = 2048;      // 11-bit digits
constexpr int kCandCap = 4096;   // boundary-bucket entries refined in shared memory
constexpr int kMinSlice = 2048;  // entries per block of a cluster's row, at least

struct Args {
  const float* scores;     // [n_q, stride]
  const int32_t* lengths;  // [n_q] or null: q_pos0 + t + 1
  int32_t* out;            // [n_q, k]
  int64_t n_q, stride, q_pos0;
  int k;
};

__device__ __forceinline__ int64_t row_len(const Args& a, int64_t t) {
  const int64_t n = a.lengths ? a.lengths[t] : a.q_pos0 + t + 1;
  return min(max(n, int64_t{0}), a.stride);
}

// Same map as ops::order_key (topk.h): monotone float -> uint32, -0 == +0.
__device__ __forceinline__ uint32_t order_key(float x) {
  uint32_t u = __float_as_uint(x);
  u = u == 0x80000000u ? 0u : u;
  return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
}
__device__ __forceinline__ uint64_t composite(float x, int64_t j) {
  return static_cast<uint64_t>(order_key(x)) << 32 | static_cast<uint32_t>(~static_cast<uint32_t>(j));
}
__device__ __forceinline__ int32_t composite_index(uint64_t c) {
  return static_cast<int32_t>(~static_cast<uint32_t>(c));
}

// Entries whose top `bits` bits equal `value`; `need` of them are still to be selected.
struct Prefix {
  uint64_t value;
  int bits;
  int need;
};
__device__ __forceinline__ int digit_width(int bits) { return min(11, 64 - bits); }
__device__ __forceinline__ bool matches(uint64_t c, const Prefix& p) {
  return p.bits == 0 || (c >> (64 - p.bits)) == p.value;
}
__device__ __forceinline__ uint32_t digit(uint64_t c, const Prefix& p) {
  const int w = digit_width(p.bits);
  return static_cast<uint32_t>(c >> (64 - p.bits - w)) & ((1u << w) - 1u);
}
// Above the prefix: selected for sure. p.bits > 0.
__device__ __forceinline__ bool above(uint64_t c, const Prefix& p) { return (c >> (64 - p.bits)) > p.value; }

using Scan = cub::BlockScan<uint32_t, kThreads>;

struct Boundary {
  Prefix next;     // the prefix extended by the boundary bucket
  uint32_t count;  // entries in the boundary bucket
};

struct HistSmem {
  uint32_t hist[kBins];
  typename Scan::TempStorage scan;
  Boundary boundary;
  int last;
};

struct RowSmem {
  HistSmem h;
  uint64_t sel[kTopkMaxK];  // selected composites (then sorted in place)
  uint64_t cand[kCandCap];  // the boundary bucket of the global passes
  int n_sel, n_cand;
};

__device__ void clear_hist(HistSmem& s) {
  for (int i = threadIdx.x; i < kBins; i += kThreads) s.hist[i] = 0;
}

// From the histogram of the digit below p (all threads, after a barrier), the boundary bucket b
// holding the p.need-th largest: s.boundary = {p then b, need within b}, count of b. Ends synced.
__device__ void find_boundary(HistSmem& s, const Prefix& p) {
  // Thread t owns 4 bins counted from the top, so an exclusive scan gives the count above them.
  uint32_t c[4], sum = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) sum += c[i] = s.hist[kBins - 1 - 4 * threadIdx.x - i];
  uint32_t over;
  Scan(s.scan).ExclusiveSum(sum, over);
  const uint32_t need = static_cast<uint32_t>(p.need);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (over < need && over + c[i] >= need) {
      const uint32_t b = kBins - 1 - 4 * threadIdx.x - i;
      const int w = digit_width(p.bits);
      s.boundary.next = {p.value << w | b, p.bits + w, static_cast<int>(need - over)};
      s.boundary.count = c[i];
    }
    over += c[i];
  }
  __syncthreads();
}

// Appends to list[*count] with one shared- or global-memory atomic per warp. Every lane of the
// warp must call it (take = false where there is nothing to add).
__device__ __forceinline__ void warp_append(bool take, uint64_t c, uint64_t* list, int* count) {
  const unsigned mask = __ballot_sync(0xffffffffu, take);
  if (mask == 0) return;
  const int lane = threadIdx.x % 32, leader = __ffs(mask) - 1;
  int base = 0;
  if (lane == leader) base = atomicAdd(count, __popc(mask));
  base = __shfl_sync(0xffffffffu, base, leader);
  if (take) list[base + __popc(mask & ((1u << lane) - 1u))] = c;
}

// Runs f(composite, in_range) over entries [begin, end) of a row; trip counts are warp-uniform
// (warp_append needs every lane), four loads in flight per thread.
template <typename F>
__device__ __forceinline__ void for_row(const float* row, int64_t begin, int64_t end, F f) {
  constexpr int kUnroll = 4;
  for (int64_t j0 = begin; j0 < end; j0 += int64_t{kThreads} * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + u * kThreads + threadIdx.x;
      v[u] = j < end ? __ldg(row + j) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + u * kThreads + threadIdx.x;
      f(composite(v[u], j), j < end);
    }
  }
}

__device__ void hist_row(uint32_t* hist, const float* row, int64_t begin, int64_t end, const Prefix& p) {
  for_row(row, begin, end, [&](uint64_t c, bool ok) {
    if (ok && matches(c, p)) atomicAdd(&hist[digit(c, p)], 1u);
  });
}

// Descending bitonic sort of s.sel[0, m), m <= kTopkMaxK, then the row's output. Thread x
// handles compare pairs i = x, x + kThreads, ...; a pair of a stride <= 32 lies in the 64
// entries [64 (i / 32), 64 (i / 32) + 64), which only the warp of x touches, so those stages
// need a warp barrier only; a block barrier comes before and after each stride >= 64.
__device__ void sort_and_write(RowSmem& s, int m, int32_t* out, int k) {
  int n2 = 1;
  while (n2 < m) n2 <<= 1;
  for (int i = m + threadIdx.x; i < n2; i += kThreads) s.sel[i] = 0;  // below every real entry
  int prev = kTopkMaxK;  // the fill above crossed warps
  for (int size = 2; size <= n2; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      if (stride >= 64 || prev >= 64)
        __syncthreads();
      else
        __syncwarp();
      prev = stride;
      for (int i = threadIdx.x; i < n2 / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const uint64_t x = s.sel[lo], y = s.sel[hi];
        if ((x < y) == desc) {
          s.sel[lo] = y;
          s.sel[hi] = x;
        }
      }
    }
  __syncthreads();
  for (int i = threadIdx.x; i < k; i += kThreads) out[i] = i < m ? composite_index(s.sel[i]) : -1;
}

// Resolves the boundary bucket among s.cand (every candidate matches p; `count` of them, p.need
// to take), appending the winners to s.sel. Block-uniform; starts and ends synced.
__device__ void refine(RowSmem& s, Prefix p, uint32_t count) {
  const int n = s.n_cand;
  const int n_iter = (n + kThreads - 1) / kThreads * kThreads;
  while (count != static_cast<uint32_t>(p.need)) {
    clear_hist(s.h);
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kThreads)
      if (matches(s.cand[i], p)) atomicAdd(&s.h.hist[digit(s.cand[i], p)], 1u);
    __syncthreads();
    find_boundary(s.h, p);
    const Prefix next = s.h.boundary.next;
    count = s.h.boundary.count;
    for (int i = threadIdx.x; i < n_iter; i += kThreads) {
      const uint64_t c = i < n ? s.cand[i] : 0;
      warp_append(i < n && matches(c, p) && above(c, next), c, s.sel, &s.n_sel);
    }
    p = next;
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n_iter; i += kThreads) {
    const uint64_t c = i < n ? s.cand[i] : 0;
    warp_append(i < n && matches(c, p), c, s.sel, &s.n_sel);
  }
  __syncthreads();
}

// A row of at most k entries: all of them, sorted. Block-uniform; starts synced.
__device__ void short_row(RowSmem& s, const float* row, int64_t n, int32_t* out, int k) {
  for_row(row, 0, n, [&](uint64_t c, bool ok) { warp_append(ok, c, s.sel, &s.n_sel); });
  __syncthreads();
  sort_and_write(s, static_cast<int>(n), out, k);
}

extern __shared__ __align__(16) unsigned char dyn_smem[];

// Many rows (prefill): one block per row.
__global__ void __launch_bounds__(kThreads) topk_row_kernel(Args a) {
  RowSmem& s = *reinterpret_cast<RowSmem*>(dyn_smem);
  const int64_t t = blockIdx.x;
  const int64_t n = row_len(a, t);
  const float* row = a.scores + t * a.stride;
  int32_t* out = a.out + t * a.k;
  if (threadIdx.x == 0) s.n_sel = s.n_cand = 0;
  __syncthreads();
  if (n <= a.k) return short_row(s, row, n, out, a.k);
  // Global passes until the boundary bucket fits in shared memory (or the key is spent).
  Prefix p{0, 0, a.k};
  uint32_t count = 0;
  while (p.bits == 0 || (count > kCandCap && p.bits < 64)) {
    clear_hist(s.h);
    __syncthreads();
    hist_row(s.h.hist, row, 0, n, p);
    __syncthreads();
    find_boundary(s.h, p);
    p = s.h.boundary.next;
    count = s.h.boundary.count;
  }
  for_row(row, 0, n, [&](uint64_t c, bool ok) {
    warp_append(ok && above(c, p), c, s.sel, &s.n_sel);
    warp_append(ok && !above(c, p) && matches(c, p), c, s.cand, &s.n_cand);
  });
  __syncthreads();
  refine(s, p, count);
  sort_and_write(s, a.k, out, a.k);
}

// Few rows (decode): one row per thread-block cluster, in one launch. Block r of the cluster
// owns the slice [r * slice, (r + 1) * slice) of the row. Each pass: every block histograms its
// slice into `local`; after a cluster barrier every block sums the cluster's histograms through
// distributed shared memory (the same sum in every block) and finds the same boundary. When the
// boundary bucket fits, every block appends its selected entries and its share of the bucket
// to block 0's lists (remote shared-memory atomics; the order of appends does not matter, the
// lists are sorted), and block 0 refines the bucket and sorts the k winners.
struct ClusterSmem {
  RowSmem row;             // the lists are used in block 0 only
  uint32_t local[kBins];   // this block's histogram, read by the whole cluster
};

__global__ void __launch_bounds__(kThreads) topk_cluster_kernel(Args a, int64_t slice) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  ClusterSmem& cs = *reinterpret_cast<ClusterSmem*>(dyn_smem);
  RowSmem& s = cs.row;
  const unsigned rank = cluster.block_rank(), n_blocks = cluster.num_blocks();
  const int64_t t = blockIdx.y;
  const int64_t n = row_len(a, t);  // cluster-uniform
  const float* row = a.scores + t * a.stride;
  int32_t* out = a.out + t * a.k;
  if (threadIdx.x == 0) s.n_sel = s.n_cand = 0;
  __syncthreads();
  if (n <= a.k) {
    if (rank == 0) short_row(s, row, n, out, a.k);
    return;  // no block touched another's shared memory
  }
  const int64_t begin = min(n, rank * slice), end = min(n, begin + slice);
  Prefix p{0, 0, a.k};
  uint32_t count = 0;
  while (p.bits == 0 || (count > kCandCap && p.bits < 64)) {
    for (int i = threadIdx.x; i < kBins; i += kThreads) cs.local[i] = 0;
    __syncthreads();
    hist_row(cs.local, row, begin, end, p);
    cluster.sync();  // every block's histogram is complete
    for (int i = threadIdx.x; i < kBins; i += kThreads) {
      uint32_t sum = 0;
      for (unsigned b = 0; b < n_blocks; ++b) sum += cluster.map_shared_rank(cs.local, b)[i];
      s.h.hist[i] = sum;
    }
    cluster.sync();  // every remote read is done before any block clears its histogram
    find_boundary(s.h, p);
    p = s.h.boundary.next;
    count = s.h.boundary.count;
  }
  uint64_t* sel0 = cluster.map_shared_rank(s.sel, 0);
  uint64_t* cand0 = cluster.map_shared_rank(s.cand, 0);
  int* n_sel0 = cluster.map_shared_rank(&s.n_sel, 0);
  int* n_cand0 = cluster.map_shared_rank(&s.n_cand, 0);
  for_row(row, begin, end, [&](uint64_t c, bool ok) {
    warp_append(ok && above(c, p), c, sel0, n_sel0);
    warp_append(ok && !above(c, p) && matches(c, p), c, cand0, n_cand0);
  });
  cluster.sync();  // block 0's lists are complete; the other blocks are done
  if (rank != 0) return;
  refine(s, p, count);
  sort_and_write(s, a.k, out, a.k);
}

int device_sms() {
  int device = 0, sms = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Launch of topk_cluster_kernel with clusters of `blocks` along x, one cluster per row.
cudaLaunchConfig_t cluster_config(unsigned blocks, unsigned rows, cudaLaunchAttribute& attr) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks, rows);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = sizeof(ClusterSmem);
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = blocks;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}

// The largest cluster (16, 8, 4 or 2 blocks) the device can run; 0: none. Set up once.
int max_cluster_blocks() {
  static const int blocks = [] {
    auto* kernel = topk_cluster_kernel;
    IC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(sizeof(ClusterSmem))));
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess)
      (void)cudaGetLastError();
    for (int b = 16; b >= 2; b /= 2) {
      cudaLaunchAttribute attr;
      const cudaLaunchConfig_t cfg = cluster_config(static_cast<unsigned>(b), 1, attr);
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0) return b;
      (void)cudaGetLastError();
    }
    return 0;
  }();
  return blocks;
}

}  // namespace

void topk(const TopkParams& p) {
  IC_CHECK(p.k >= 1 && p.k <= kTopkMaxK, "topk (cuda): k = {} is not supported (1 <= k <= {})", p.k,
           kTopkMaxK);
  IC_CHECK(p.n_q <= INT32_MAX, "topk (cuda): {} rows exceed the CUDA grid", p.n_q);
  if (p.n_q == 0) return;
  const Args a{p.scores, p.lengths, p.out, p.n_q, p.row_stride, p.q_pos0, static_cast<int>(p.k)};
  // The longest row bounds the slices; the lengths themselves stay on the device.
  const int64_t max_len = p.lengths ? p.row_stride : std::min(p.row_stride, p.q_pos0 + p.n_q);
  // Few long rows: a cluster of blocks per row, as many blocks as keep about 2 per SM busy.
  const int64_t want = std::min<int64_t>((2 * device_sms() + p.n_q - 1) / p.n_q, (max_len + kMinSlice - 1) / kMinSlice);
  int blocks = max_cluster_blocks();
  while (blocks > 1 && blocks > want) blocks /= 2;
  if (blocks >= 2 && p.n_q <= 65535) {
    const int64_t slice = ((max_len + blocks - 1) / blocks + 127) / 128 * 128;
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = cluster_config(static_cast<unsigned>(blocks), static_cast<unsigned>(p.n_q), attr);
    IC_CUDA_CHECK(cudaLaunchKernelEx(&cfg, topk_cluster_kernel, a, slice));
    IC_CUDA_CHECK_LAUNCH();
    return;
  }
  static const bool attr_set = [] {
    IC_CUDA_CHECK(cudaFuncSetAttribute(topk_row_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(sizeof(RowSmem))));
    return true;
  }();
  (void)attr_set;
  topk_row_kernel<<<static_cast<unsigned>(p.n_q), kThreads, sizeof(RowSmem)>>>(a);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda
