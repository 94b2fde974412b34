// Dense causal GQA attention on the GPU, flash style: K and V stream through shared memory in
// tiles of 32 keys while every query row keeps an online softmax (running max m, running sum l,
// unnormalised output) in registers, so the n_q x n_keys score matrix never reaches memory.
//
// A block owns 16 query rows of one KV head, a row being one (position, head of the group) pair,
// so each K/V tile is loaded once for the whole group. When those blocks are too few to fill the
// GPU (decode: one position, a handful of rows), the key range is also split across blocks
// (split-K, as flash-decoding does); each split writes (m, l, unnormalised output) and a second
// kernel merges them. The split count depends only on the shapes, so results are reproducible.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/cuda_check.h"
#include "ops/attention.h"

namespace ic::ops::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per block
constexpr int kKeys = 32;                     // keys per tile: one per lane when scoring
constexpr int64_t kMinKeysPerSplit = 64;      // below this a split costs more than it gains

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Partial results of split-K: for split s and output row (i, h), the unnormalised output and (m, l).
struct Partials {
  float* acc;  // [splits, n_q, n_heads, D]; null when there is one split
  float* ml;   // [splits, n_q, n_heads, 2]
};

// Grid: (row blocks, n_kv_heads, splits). Split z covers keys [z * chunk, (z + 1) * chunk).
template <int D>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionParams p, int64_t chunk, Partials part) {
  constexpr int kStride = D + 4;  // padded K rows: the 8 lanes of each float4 phase hit distinct banks
  constexpr int kPerLane = D / 32;
  __shared__ __align__(16) float q_s[kRows][D];
  __shared__ __align__(16) float k_s[kKeys][kStride];
  __shared__ __align__(16) float v_s[kKeys][D];
  __shared__ float p_s[kWarps][kRowsPerWarp][kKeys];

  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t n_rows = p.n_q * group;
  const int64_t g = blockIdx.y;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int e = threadIdx.x; e < kRows * D / 4; e += blockDim.x) {
    const int r = e / (D / 4), c4 = e % (D / 4);
    const int64_t R = row0 + r;
    float4 val = make_float4(0.f, 0.f, 0.f, 0.f);
    if (R < n_rows) {
      const int64_t i = R / group, h = g * group + R % group;
      val = reinterpret_cast<const float4*>(p.q + (i * p.n_heads + h) * D)[c4];
    }
    reinterpret_cast<float4*>(q_s[r])[c4] = val;
  }

  // Keys this block may need: its split's range, cut at the causal limit of its last row.
  const int64_t last_row = min(row0 + kRows, n_rows) - 1;
  const int64_t key_begin = blockIdx.z * chunk;
  const int64_t key_end = min(key_begin + chunk, p.q_pos0 + last_row / group + 1);

  int64_t row_pos[kRowsPerWarp];  // absolute position of each of this warp's rows; -1: no row
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kPerLane];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t R = row0 + warp * kRowsPerWarp + j;
    row_pos[j] = R < n_rows ? p.q_pos0 + R / group : -1;
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) acc[j][t] = 0.0f;
  }

  const float* kh = p.k + g * p.kv_capacity * D;
  const float* vh = p.v + g * p.kv_capacity * D;
  for (int64_t j0 = key_begin; j0 < key_end; j0 += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    // Keys past key_end are zero, never read: the cache beyond them may hold anything, and a
    // NaN times a zero weight would still poison the output.
    for (int e = threadIdx.x; e < kKeys * D / 4; e += blockDim.x) {
      const int key = e / (D / 4), c4 = e % (D / 4);
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (j0 + key < key_end) {
        kv = reinterpret_cast<const float4*>(kh + (j0 + key) * D)[c4];
        vv = reinterpret_cast<const float4*>(vh + (j0 + key) * D)[c4];
      }
      reinterpret_cast<float4*>(&k_s[key][0])[c4] = kv;
      reinterpret_cast<float4*>(&v_s[key][0])[c4] = vv;
    }
    __syncthreads();

    // Scores: lane = key, a float4 of K against the same float4 of each row's q (a broadcast).
    float s[kRowsPerWarp] = {};
#pragma unroll 4
    for (int c = 0; c < D; c += 4) {
      const float4 kv = *reinterpret_cast<const float4*>(&k_s[lane][c]);
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const float4 qv = *reinterpret_cast<const float4*>(&q_s[warp * kRowsPerWarp + j][c]);
        s[j] = fmaf(qv.x, kv.x, s[j]);
        s[j] = fmaf(qv.y, kv.y, s[j]);
        s[j] = fmaf(qv.z, kv.z, s[j]);
        s[j] = fmaf(qv.w, kv.w, s[j]);
      }
    }
    const int64_t key = j0 + lane;
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const bool visible = key < key_end && key <= row_pos[j];  // row_pos -1: nothing visible
      const float sj = visible ? s[j] * p.scale : -INFINITY;
      const float tile_max = warp_max(sj);
      if (tile_max == -INFINITY) {  // no visible key in this tile for this row (warp-uniform)
        p_s[warp][j][lane] = 0.0f;
        continue;
      }
      const float new_m = fmaxf(m[j], tile_max);
      const float corr = expf(m[j] - new_m);  // 0 on the first visible tile (m = -inf)
      const float pj = expf(sj - new_m);
      l[j] = l[j] * corr + warp_sum(pj);
      m[j] = new_m;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) acc[j][t] *= corr;
      p_s[warp][j][lane] = pj;
    }
    __syncwarp();

    // Output: lane owns dims lane + 32 t; each weight is a shared-memory broadcast.
    const int n_keys = static_cast<int>(min(static_cast<int64_t>(kKeys), key_end - j0));
    for (int kk = 0; kk < n_keys; ++kk) {
      float vv[kPerLane];
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) vv[t] = v_s[kk][lane + 32 * t];
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const float pj = p_s[warp][j][kk];
#pragma unroll
        for (int t = 0; t < kPerLane; ++t) acc[j][t] = fmaf(pj, vv[t], acc[j][t]);
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    if (row_pos[j] < 0) continue;
    const int64_t R = row0 + warp * kRowsPerWarp + j;
    const int64_t i = R / group, h = g * group + R % group;
    const int64_t o = i * p.n_heads + h;
    if (part.acc == nullptr) {
      const float inv = 1.0f / l[j];  // l >= 1: key 0 is visible to every row
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) p.out[o * D + lane + 32 * t] = acc[j][t] * inv;
      if (p.lse && lane == 0) p.lse[o] = m[j] + logf(l[j]);
    } else {
      // A split wholly past this row's causal limit leaves m = -inf, l = 0, acc = 0.
      const int64_t po = blockIdx.z * p.n_q * p.n_heads + o;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) part.acc[po * D + lane + 32 * t] = acc[j][t];
      if (lane == 0) {
        part.ml[2 * po] = m[j];
        part.ml[2 * po + 1] = l[j];
      }
    }
  }
}

// One block per output row (i, h), one thread per dim: merge the splits' partial softmaxes.
__global__ void combine_kernel(AttentionParams p, int64_t splits, Partials part) {
  const int64_t o = blockIdx.x;
  const int64_t rows = p.n_q * p.n_heads;
  float mx = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mx = fmaxf(mx, part.ml[2 * (s * rows + o)]);
  float sum = 0.0f, acc = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const float ms = part.ml[2 * (s * rows + o)];
    if (ms == -INFINITY) continue;  // this split saw no key of the row
    const float w = expf(ms - mx);
    sum = fmaf(part.ml[2 * (s * rows + o) + 1], w, sum);
    acc = fmaf(part.acc[(s * rows + o) * p.head_dim + threadIdx.x], w, acc);
  }
  p.out[o * p.head_dim + threadIdx.x] = acc / sum;
  if (p.lse && threadIdx.x == 0) p.lse[o] = mx + logf(sum);
}

template <int D>
void run(const AttentionParams& p) {
  const int64_t group = p.n_heads / p.n_kv_heads;
  const int64_t row_blocks = (p.n_q * group + kRows - 1) / kRows;
  const int64_t n_keys = p.q_pos0 + p.n_q;
  int device = 0, sms = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Aim for two blocks per multiprocessor; split the keys only as far as that needs.
  const int64_t base_blocks = row_blocks * p.n_kv_heads;
  int64_t splits = 1;
  if (base_blocks < 2 * sms)
    splits = std::max<int64_t>(1, std::min((2 * sms + base_blocks - 1) / base_blocks, n_keys / kMinKeysPerSplit));
  int64_t chunk = (n_keys + splits - 1) / splits;
  chunk = (chunk + kKeys - 1) / kKeys * kKeys;
  splits = (n_keys + chunk - 1) / chunk;
  IC_CHECK(row_blocks <= INT32_MAX && p.n_kv_heads <= 65535 && splits <= 65535,
           "attention (cuda): grid {}x{}x{} is too large", row_blocks, p.n_kv_heads, splits);

  Partials part{nullptr, nullptr};
  void* ws = nullptr;
  const int64_t rows = p.n_q * p.n_heads;
  if (splits > 1) {
    // Stream-ordered allocation: served from the driver's pool after the first call.
    IC_CUDA_CHECK(cudaMallocAsync(&ws, static_cast<size_t>(splits * rows * (D + 2)) * sizeof(float), nullptr));
    part.acc = static_cast<float*>(ws);
    part.ml = part.acc + splits * rows * D;
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(p.n_kv_heads),
                  static_cast<unsigned>(splits));
  attention_kernel<D><<<grid, kWarps * 32>>>(p, chunk, part);
  IC_CUDA_CHECK_LAUNCH();
  if (splits > 1) {
    combine_kernel<<<static_cast<unsigned>(rows), D>>>(p, splits, part);
    IC_CUDA_CHECK_LAUNCH();
    IC_CUDA_CHECK(cudaFreeAsync(ws, nullptr));
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void attention(const AttentionParams& p) {
  if (p.n_q == 0 || p.n_heads == 0) return;
  IC_CHECK(aligned16(p.q) && aligned16(p.k) && aligned16(p.v),
           "attention (cuda): q, k and v must be 16-byte aligned for vector loads");
  IC_CHECK(p.n_q * p.n_heads <= INT32_MAX, "attention (cuda): {} output rows exceed the CUDA grid",
           p.n_q * p.n_heads);
  switch (p.head_dim) {
    case 32: return run<32>(p);
    case 64: return run<64>(p);
    case 128: return run<128>(p);
    default: fail("attention (cuda): head_dim {} is not supported (supported: 32, 64, 128)", p.head_dim);
  }
}

}  // namespace ic::ops::cuda
