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
// Many rows (prefill): one block per row, one launch. Few rows (decode): each row is split over
// many blocks for the global passes (their histograms meet in global memory; the last block to
// arrive finds the boundary), then one block per row finishes. The result depends only on the
// scores: composites are unique, and the selected set is sorted before it is written.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "core/cuda_check.h"
#include "ops/topk.h"

namespace ic::ops::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kBins = 2048;      // 11-bit digits
constexpr int kCandCap = 4096;   // boundary-bucket entries refined in shared memory
constexpr int kMaxLevels = 3;    // split global passes before the finishing block takes over
constexpr int kMinSlice = 2048;  // entries per block of a split row, at least

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

__device__ void hist_row(HistSmem& s, const float* row, int64_t begin, int64_t end, const Prefix& p) {
  for_row(row, begin, end, [&](uint64_t c, bool ok) {
    if (ok && matches(c, p)) atomicAdd(&s.hist[digit(c, p)], 1u);
  });
}

// Descending bitonic sort of s.sel[0, m), m <= kTopkMaxK, then the row's output.
__device__ void sort_and_write(RowSmem& s, int m, int32_t* out, int k) {
  int n2 = 1;
  while (n2 < m) n2 <<= 1;
  for (int i = m + threadIdx.x; i < n2; i += kThreads) s.sel[i] = 0;  // below every real entry
  __syncthreads();
  for (int size = 2; size <= n2; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n2 / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const uint64_t x = s.sel[lo], y = s.sel[hi];
        if ((x < y) == desc) {
          s.sel[lo] = y;
          s.sel[hi] = x;
        }
      }
      __syncthreads();
    }
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

// Per-row state of a split selection (global memory, zeroed before the first level).
struct RowState {
  unsigned long long value;
  int bits, need;
  unsigned count;
  int done;  // boundary bucket small enough: collect it
  unsigned arrived;
  int n_sel, n_cand;
};

struct SplitWork {
  RowState* state;  // [n_q]
  uint32_t* hist;   // [n_q, kBins]
  uint64_t* sel;    // [n_q, kTopkMaxK]
  uint64_t* cand;   // [n_q, kCandCap]
  int64_t slice;    // entries per block
};

extern __shared__ __align__(16) unsigned char dyn_smem[];

// One block per row; `w.state` non-null: continue a split selection of this row.
__global__ void __launch_bounds__(kThreads) topk_row_kernel(Args a, SplitWork w) {
  RowSmem& s = *reinterpret_cast<RowSmem*>(dyn_smem);
  const int64_t t = blockIdx.x;
  const int64_t n = row_len(a, t);
  const float* row = a.scores + t * a.stride;
  int32_t* out = a.out + t * a.k;
  if (threadIdx.x == 0) s.n_sel = s.n_cand = 0;
  __syncthreads();
  if (n <= a.k) {
    for_row(row, 0, n, [&](uint64_t c, bool ok) { warp_append(ok, c, s.sel, &s.n_sel); });
    __syncthreads();
    sort_and_write(s, static_cast<int>(n), out, a.k);
    return;
  }
  Prefix p{0, 0, a.k};
  uint32_t count = 0;
  bool collected = false;
  if (w.state) {
    const RowState& st = w.state[t];
    p = {st.value, st.bits, st.need};
    count = st.count;
    if (st.done) {  // the split blocks collected the row: load their lists
      for (int i = threadIdx.x; i < st.n_sel; i += kThreads) s.sel[i] = w.sel[t * kTopkMaxK + i];
      for (int i = threadIdx.x; i < st.n_cand; i += kThreads) s.cand[i] = w.cand[t * kCandCap + i];
      if (threadIdx.x == 0) {
        s.n_sel = st.n_sel;
        s.n_cand = st.n_cand;
      }
      collected = true;
      __syncthreads();
    }
  }
  if (!collected) {
    // More global passes until the boundary bucket fits in shared memory (or the key is spent).
    while (p.bits == 0 || (count > kCandCap && p.bits < 64)) {
      clear_hist(s.h);
      __syncthreads();
      hist_row(s.h, row, 0, n, p);
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
  }
  refine(s, p, count);
  sort_and_write(s, a.k, out, a.k);
}

// Split pass `level` over blocks (slice, row): histogram of the next digit; the last block of a
// row to arrive finds the boundary and advances the row's state.
__global__ void __launch_bounds__(kThreads) topk_split_hist_kernel(Args a, SplitWork w, int level) {
  __shared__ HistSmem s;
  const int64_t t = blockIdx.y;
  const int64_t n = row_len(a, t);
  if (n <= a.k) return;
  RowState& st = w.state[t];
  if (level > 0 && *static_cast<volatile int*>(&st.done)) return;
  const Prefix p = level == 0 ? Prefix{0, 0, a.k} : Prefix{st.value, st.bits, st.need};
  const int64_t begin = blockIdx.x * w.slice, end = min(n, begin + w.slice);
  clear_hist(s);
  __syncthreads();
  if (begin < end) hist_row(s, a.scores + t * a.stride, begin, end, p);
  __syncthreads();
  uint32_t* gh = w.hist + t * kBins;
  for (int i = threadIdx.x; i < kBins; i += kThreads)
    if (s.hist[i]) atomicAdd(&gh[i], s.hist[i]);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s.last = atomicAdd(&st.arrived, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!s.last) return;
  __threadfence();
  for (int i = threadIdx.x; i < kBins; i += kThreads) {
    s.hist[i] = __ldcg(gh + i);
    gh[i] = 0;  // clean for the next level
  }
  __syncthreads();
  find_boundary(s, p);
  if (threadIdx.x == 0) {
    const Boundary& b = s.boundary;
    st.value = b.next.value;
    st.bits = b.next.bits;
    st.need = b.next.need;
    st.count = b.count;
    st.done = b.count <= kCandCap || b.next.bits == 64;
    st.arrived = 0;
    st.n_sel = st.n_cand = 0;
  }
}

// Split collection: entries above the row's prefix into w.sel, the boundary bucket into w.cand.
__global__ void __launch_bounds__(kThreads) topk_split_collect_kernel(Args a, SplitWork w) {
  const int64_t t = blockIdx.y;
  const int64_t n = row_len(a, t);
  if (n <= a.k) return;
  RowState& st = w.state[t];
  if (!st.done) return;  // the finishing block continues with global passes
  const Prefix p{st.value, st.bits, st.need};
  const int64_t begin = blockIdx.x * w.slice, end = min(n, begin + w.slice);
  if (begin >= end) return;
  uint64_t* sel = w.sel + t * kTopkMaxK;
  uint64_t* cand = w.cand + t * kCandCap;
  for_row(a.scores + t * a.stride, begin, end, [&](uint64_t c, bool ok) {
    warp_append(ok && above(c, p), c, sel, &st.n_sel);
    warp_append(ok && !above(c, p) && matches(c, p), c, cand, &st.n_cand);
  });
}

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

}  // namespace

void topk(const TopkParams& p) {
  IC_CHECK(p.k >= 1 && p.k <= kTopkMaxK, "topk (cuda): k = {} is not supported (1 <= k <= {})", p.k,
           kTopkMaxK);
  IC_CHECK(p.n_q <= INT32_MAX, "topk (cuda): {} rows exceed the CUDA grid", p.n_q);
  if (p.n_q == 0) return;
  const Args a{p.scores, p.lengths, p.out, p.n_q, p.row_stride, p.q_pos0, static_cast<int>(p.k)};
  const size_t smem = sizeof(RowSmem);
  IC_CUDA_CHECK(cudaFuncSetAttribute(topk_row_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  // The longest row bounds the slices; the lengths themselves stay on the device.
  const int64_t max_len = p.lengths ? p.row_stride : std::min(p.row_stride, p.q_pos0 + p.n_q);
  const int sms = device_sms();
  const int64_t splits = std::min<int64_t>((2 * sms + p.n_q - 1) / p.n_q, (max_len + kMinSlice - 1) / kMinSlice);
  if (splits <= 1 || p.n_q > 65535) {
    topk_row_kernel<<<static_cast<unsigned>(p.n_q), kThreads, smem>>>(a, SplitWork{});
    IC_CUDA_CHECK_LAUNCH();
    return;
  }
  SplitWork w;
  w.slice = (max_len + splits - 1) / splits;
  const size_t state_bytes = (static_cast<size_t>(p.n_q) * sizeof(RowState) + 255) / 256 * 256;
  const size_t hist_bytes = static_cast<size_t>(p.n_q) * kBins * sizeof(uint32_t);
  const size_t list_bytes = static_cast<size_t>(p.n_q) * (kTopkMaxK + kCandCap) * sizeof(uint64_t);
  void* ws = nullptr;
  // Stream-ordered allocation: served from the driver's pool after the first call.
  keep_pool_memory();
  IC_CUDA_CHECK(cudaMallocAsync(&ws, state_bytes + hist_bytes + list_bytes, nullptr));
  char* base = static_cast<char*>(ws);
  w.state = reinterpret_cast<RowState*>(base);
  w.hist = reinterpret_cast<uint32_t*>(base + state_bytes);
  w.sel = reinterpret_cast<uint64_t*>(base + state_bytes + hist_bytes);
  w.cand = w.sel + p.n_q * kTopkMaxK;
  IC_CUDA_CHECK(cudaMemsetAsync(ws, 0, state_bytes + hist_bytes, nullptr));
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(p.n_q));
  for (int level = 0; level < kMaxLevels; ++level) {
    topk_split_hist_kernel<<<grid, kThreads>>>(a, w, level);
    IC_CUDA_CHECK_LAUNCH();
  }
  topk_split_collect_kernel<<<grid, kThreads>>>(a, w);
  IC_CUDA_CHECK_LAUNCH();
  topk_row_kernel<<<static_cast<unsigned>(p.n_q), kThreads, smem>>>(a, w);
  IC_CUDA_CHECK_LAUNCH();
  IC_CUDA_CHECK(cudaFreeAsync(ws, nullptr));
}

}  // namespace ic::ops::cuda
