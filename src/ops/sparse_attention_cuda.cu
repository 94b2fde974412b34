// Sparse GQA attention on the GPU (DSA over a llama-family cache, e.g. SmolLM2: 9 query heads,
// 3 KV heads, head dim 64).
//
// One warp owns one unit: a token, one KV head, up to kRowsPerWarp query heads of its group and
// one slice of the token's index list. Keys go through in tiles of 32 index entries, one per
// lane: each lane gathers its own key row (whole 32-byte sectors, so a scattered gather wastes
// nothing) and scores it against the warp's query rows, which sit in shared memory and are read
// as broadcasts; the online softmax (running max m, running sum l) runs across the lanes; then
// each lane owns head_dim / 32 output dims and reads the selected value rows coalesced. No key or
// value tile is staged in shared memory: every gathered row is used by the warp that loaded it,
// by all of its query heads at once.
//
// Decode (one token, a handful of units) splits the index list over several warps so the GPU
// fills; each split writes its (m, l, unnormalised output) and a second kernel merges them with
// the log-sum-exp. The split count depends only on the shapes: results are reproducible.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda_check.h"
#include "ops/sparse_attention.h"

namespace ic::ops::cuda {

namespace {

constexpr int kWarps = 4;        // units per block
constexpr int kRowsPerWarp = 4;  // query heads of one KV head's group per unit
constexpr int kKeys = 32;        // index entries per tile: one per lane
constexpr int64_t kMinEntriesPerSplit = 128;

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ float bf16_bits_to_float(uint32_t bits) { return __uint_as_float(bits << 16); }

// Reads of one cache row, f32 or bf16. Output dim of lane for slot t: f32 lanes own dims
// lane + 32 t (128-byte coalesced rows); bf16 lanes own the pair 2 lane + 64 (t / 2) + t % 2, so
// each lane reads 4 bytes per pair and the warp 128 bytes (head dim 32: dim lane, 2 bytes).
template <typename KV>
struct Cache;

template <>
struct Cache<float> {
  // Dot of one row with a query row held in shared memory (f32).
  template <int D>
  __device__ static float dot(const float* row, const float* q) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < D; c += 4) {
      const float4 k = *reinterpret_cast<const float4*>(row + c);
      const float4 qv = *reinterpret_cast<const float4*>(q + c);
      s = fmaf(qv.x, k.x, s);
      s = fmaf(qv.y, k.y, s);
      s = fmaf(qv.z, k.z, s);
      s = fmaf(qv.w, k.w, s);
    }
    return s;
  }
  template <int D>
  __device__ static int dim(int lane, int t) { return lane + 32 * t; }
  template <int D>
  __device__ static void load_v(const float* row, int lane, float (&v)[D / 32]) {
#pragma unroll
    for (int t = 0; t < D / 32; ++t) v[t] = row[dim<D>(lane, t)];
  }
};

template <>
struct Cache<uint16_t> {
  template <int D>
  __device__ static float dot(const uint16_t* row, const float* q) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < D; c += 8) {
      const uint4 k = *reinterpret_cast<const uint4*>(row + c);
      const uint32_t w[4] = {k.x, k.y, k.z, k.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s = fmaf(q[c + 2 * j], bf16_bits_to_float(w[j] & 0xffffu), s);
        s = fmaf(q[c + 2 * j + 1], bf16_bits_to_float(w[j] >> 16), s);
      }
    }
    return s;
  }
  // Head dim 32 has one dim per lane: plain 2-byte reads.
  template <int D>
  __device__ static int dim(int lane, int t) { return D == 32 ? lane : 2 * lane + 64 * (t / 2) + t % 2; }
  template <int D>
  __device__ static void load_v(const uint16_t* row, int lane, float (&v)[D / 32]) {
    if constexpr (D == 32) {
      v[0] = bf16_bits_to_float(row[lane]);
    } else {
#pragma unroll
      for (int t = 0; t < D / 32; t += 2) {
        const uint32_t w = *reinterpret_cast<const uint32_t*>(row + 2 * lane + 64 * (t / 2));
        v[t] = bf16_bits_to_float(w & 0xffffu);
        v[t + 1] = bf16_bits_to_float(w >> 16);
      }
    }
  }
};

struct Partials {
  float* acc;  // [splits, n_q, n_heads, D]; null when there is one split
  float* ml;   // [splits, n_q, n_heads, 2]
};

struct Layout {
  int64_t row_chunks;  // units per (token, KV head): ceil(group / kRowsPerWarp)
  int64_t splits;      // slices of the index list
  int64_t chunk;       // index entries per slice, a multiple of kKeys
  int64_t units;       // n_q * n_kv_heads * row_chunks * splits
};

template <int D, typename KV>
__global__ void __launch_bounds__(kWarps * 32)
    sparse_attention_kernel(SparseAttentionParams p, const KV* k_cache, const KV* v_cache, Layout lay,
                            Partials part) {
  constexpr int kPerLane = D / 32;
  __shared__ __align__(16) float q_s[kWarps][kRowsPerWarp][D];
  __shared__ float p_s[kWarps][kRowsPerWarp][kKeys];
  __shared__ int32_t idx_s[kWarps][kKeys];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (unit >= lay.units) return;  // whole warps only: no block-wide barrier below
  int64_t u = unit;
  const int64_t split = u % lay.splits;
  u /= lay.splits;
  const int64_t rc = u % lay.row_chunks;
  u /= lay.row_chunks;
  const int64_t g = u % p.n_kv_heads;
  const int64_t t = u / p.n_kv_heads;
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t h0 = g * group + rc * kRowsPerWarp;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kRowsPerWarp), group - rc * kRowsPerWarp));

  for (int e = lane; e < kRowsPerWarp * D; e += 32) {
    const int r = e / D, c = e % D;
    q_s[warp][r][c] = r < rows ? p.q[(t * p.n_heads + h0 + r) * D + c] : 0.0f;
  }
  __syncwarp();

  const int64_t begin = split * lay.chunk, end = min(begin + lay.chunk, p.topk_k);
  const int32_t* idx = p.topk + t * p.topk_k;
  const KV* kh = k_cache + g * p.kv_capacity * D;
  const KV* vh = v_cache + g * p.kv_capacity * D;

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kPerLane];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) acc[r][j] = 0.0f;
  }

  for (int64_t i0 = begin; i0 < end; i0 += kKeys) {
    // Out-of-range entries (-1, or anything outside the cache) are skipped, never read.
    int32_t s = i0 + lane < end ? idx[i0 + lane] : -1;
    if (s >= p.kv_capacity) s = -1;
    const bool valid = s >= 0;
    float sc[kRowsPerWarp];
    if (valid) {
      const KV* row = kh + static_cast<int64_t>(s) * D;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) sc[r] = Cache<KV>::template dot<D>(row, q_s[warp][r]) * p.scale;
    }
    idx_s[warp][lane] = s;
    if (__ballot_sync(0xffffffffu, valid) == 0u) continue;  // a tile of -1 only
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float sr = valid ? sc[r] : -INFINITY;
      const float new_m = fmaxf(m[r], warp_max(sr));  // finite: some lane is valid
      const float corr = expf(m[r] - new_m);          // 0 on the first valid tile (m = -inf)
      const float pr = valid ? expf(sr - new_m) : 0.0f;
      l[r] = l[r] * corr + warp_sum(pr);
      m[r] = new_m;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) acc[r][j] *= corr;
      p_s[warp][r][lane] = pr;
    }
    __syncwarp();
    for (int kk = 0; kk < kKeys; ++kk) {
      const int32_t sk = idx_s[warp][kk];
      if (sk < 0) continue;  // warp-uniform
      float v[kPerLane];
      Cache<KV>::template load_v<D>(vh + static_cast<int64_t>(sk) * D, lane, v);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float pr = p_s[warp][r][kk];
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) acc[r][j] = fmaf(pr, v[j], acc[r][j]);
      }
    }
    __syncwarp();  // idx_s and p_s are rewritten by the next tile
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (r >= rows) break;
    const int64_t o = t * p.n_heads + h0 + r;
    if (part.acc == nullptr) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // no valid entry: zeros
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) p.out[o * D + Cache<KV>::template dim<D>(lane, j)] = acc[r][j] * inv;
      if (p.lse && lane == 0) p.lse[o] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    } else {
      const int64_t po = split * p.n_q * p.n_heads + o;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) part.acc[po * D + Cache<KV>::template dim<D>(lane, j)] = acc[r][j];
      if (lane == 0) {
        part.ml[2 * po] = m[r];
        part.ml[2 * po + 1] = l[r];
      }
    }
  }
}

// One block per output row (token, head), one thread per dim: merge the splits' softmaxes.
__global__ void combine_kernel(SparseAttentionParams p, int64_t splits, Partials part) {
  const int64_t o = blockIdx.x;
  const int64_t rows = p.n_q * p.n_heads;
  float mx = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mx = fmaxf(mx, part.ml[2 * (s * rows + o)]);
  float sum = 0.0f, acc = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const float ms = part.ml[2 * (s * rows + o)];
    if (ms == -INFINITY) continue;  // this split had no valid entry
    const float w = expf(ms - mx);
    sum = fmaf(part.ml[2 * (s * rows + o) + 1], w, sum);
    acc = fmaf(part.acc[(s * rows + o) * p.head_dim + threadIdx.x], w, acc);
  }
  p.out[o * p.head_dim + threadIdx.x] = sum > 0.0f ? acc / sum : 0.0f;
  if (p.lse && threadIdx.x == 0) p.lse[o] = sum > 0.0f ? mx + logf(sum) : -INFINITY;
}

template <int D, typename KV>
void run(const SparseAttentionParams& p, const KV* k, const KV* v) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  Layout lay{};
  lay.row_chunks = (group + kRowsPerWarp - 1) / kRowsPerWarp;
  const int64_t base = p.n_q * p.n_kv_heads * lay.row_chunks;
  int device = 0, sms = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Aim for 16 warps per multiprocessor; split the index list only as far as that needs.
  const int64_t want = 16LL * sms;
  lay.splits = 1;
  if (base < want)
    lay.splits = std::max<int64_t>(1, std::min((want + base - 1) / base, p.topk_k / kMinEntriesPerSplit));
  lay.chunk = (p.topk_k + lay.splits - 1) / lay.splits;
  lay.chunk = std::max<int64_t>(kKeys, (lay.chunk + kKeys - 1) / kKeys * kKeys);
  lay.splits = std::max<int64_t>(1, (p.topk_k + lay.chunk - 1) / lay.chunk);
  lay.units = base * lay.splits;
  const int64_t blocks = (lay.units + kWarps - 1) / kWarps;
  IC_CHECK(blocks <= INT32_MAX, "sparse_attention (cuda): {} blocks exceed the CUDA grid", blocks);

  Partials part{nullptr, nullptr};
  void* ws = nullptr;
  const int64_t rows = p.n_q * p.n_heads;
  if (lay.splits > 1) {
    IC_CUDA_CHECK(cudaMallocAsync(&ws, static_cast<size_t>(lay.splits * rows * (D + 2)) * sizeof(float), nullptr));
    part.acc = static_cast<float*>(ws);
    part.ml = part.acc + lay.splits * rows * D;
  }
  sparse_attention_kernel<D, KV><<<static_cast<unsigned>(blocks), kWarps * 32>>>(p, k, v, lay, part);
  IC_CUDA_CHECK_LAUNCH();
  if (lay.splits > 1) {
    combine_kernel<<<static_cast<unsigned>(rows), D>>>(p, lay.splits, part);
    IC_CUDA_CHECK_LAUNCH();
    IC_CUDA_CHECK(cudaFreeAsync(ws, nullptr));
  }
}

template <int D>
void run_dtype(const SparseAttentionParams& p) {
  if (p.k_bf16) return run<D, uint16_t>(p, p.k_bf16, p.v_bf16);
  run<D, float>(p, p.k, p.v);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void sparse_attention(const SparseAttentionParams& p) {
  if (p.n_q == 0 || p.n_heads == 0) return;
  const bool bf16 = p.k_bf16 != nullptr;
  IC_CHECK(bf16 ? p.v_bf16 != nullptr : (p.k != nullptr && p.v != nullptr),
           "sparse_attention (cuda): k and v must both be f32 or both bf16");
  IC_CHECK(aligned16(p.q) && aligned16(bf16 ? static_cast<const void*>(p.k_bf16) : p.k) &&
               aligned16(bf16 ? static_cast<const void*>(p.v_bf16) : p.v),
           "sparse_attention (cuda): q, k and v must be 16-byte aligned for vector loads");
  if (p.topk_k == 0) {
    // Nothing selected: the empty sum for every query (zeros, LSE -inf), as on the CPU.
    IC_CUDA_CHECK(cudaMemsetAsync(p.out, 0, static_cast<size_t>(p.n_q * p.n_heads * p.head_dim) * sizeof(float)));
    if (p.lse) {
      const int64_t n = p.n_q * p.n_heads;
      std::vector<float> inf(static_cast<size_t>(n), -INFINITY);
      IC_CUDA_CHECK(cudaMemcpy(p.lse, inf.data(), static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice));
    }
    return;
  }
  switch (p.head_dim) {
    case 32: return run_dtype<32>(p);
    case 64: return run_dtype<64>(p);
    case 128: return run_dtype<128>(p);
    default:
      fail("sparse_attention (cuda): head_dim {} is not supported (supported: 32, 64, 128)", p.head_dim);
  }
}

}  // namespace ic::ops::cuda
