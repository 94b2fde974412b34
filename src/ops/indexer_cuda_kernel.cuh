#pragma once
// The lightning indexer's score kernel on tensor cores (mma.sync m16n8k16; sm_89+ for the e4m3 conversion).
//
//   score[t, s] = k_scale[s] * sum_h w[t, h] * ReLU(q[t, h, :] . k[s, :])
//
// As a matrix product, M = keys, N = heads, K = head_dim: the accumulator of one m16n8 tile holds
// 16 keys x 8 heads, so the ReLU and the head-weighted sum happen in registers and the sum over
// heads needs only two shuffles (across the 4 lanes sharing a key row). Each warp keeps its
// queries' q fragments (B operands) in registers for the whole kernel and streams key tiles
// (A operands) from shared memory with ldmatrix; one A fragment feeds HT x KQ mma's.
// Key tiles of 128 rows are double-buffered in shared memory with cp.async and shared by the
// block's warps: warps split as wq query groups x (8 / wq) key groups, so prefill blocks share
// keys among 8 x KQ queries and decode blocks (one query) give each warp its own 16-key slices.
//
// bf16 runs as m16n8k16 MMAs. fp8 runs as f16 m16n8k16 MMAs on operands converted in registers
// (e4m3 -> f16 is exact): Hopper's mma.sync e4m3 m16n8k32 measured 190 TFLOP/s here, below the
// 350 of the 16-bit path (bench/RESULTS.md); full fp8 rate needs wgmma. Both load the same
// 32 bytes of K per ldmatrix.x4: an e4m3 fragment (lane: bytes 4 tig .. 4 tig + 3 of each
// 16-byte half) becomes two f16 fragments by using element 4 tig + {0, 1} as k = 2 tig + {0, 1}
// and 4 tig + {2, 3} as k = 8 + 2 tig + {0, 1}: a permutation of K applied to q and k alike,
// which leaves every dot product unchanged.
// Each (t, s) is computed by one warp in a fixed order, so results are bitwise reproducible and
// do not depend on the launch's split of queries or keys.
#include <cuda_runtime.h>

#include <cstdint>

namespace ic::ops::cuda::indexer_detail {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 128;  // keys per shared-memory tile: 8 m16 tiles
constexpr int kStages = 2;
constexpr int kRowPad = 16;     // bytes after each key row: ldmatrix rows land in distinct banks

struct ScoreArgs {
  const uint8_t* q;           // [n_q, n_heads, RB bytes]
  const float* w;             // [n_q, n_heads]
  const int32_t* row_start;   // [n_q] or null: 0
  const int32_t* row_end;     // [n_q] or null: q_pos0 + t + 1
  int64_t q_pos0;
  int64_t n_heads;
  int64_t t_begin, t_end;     // queries of this launch
  int64_t key_limit;          // keys that exist: ranges are clamped to [0, key_limit)
  float* out;                 // [t_end - t_begin, ld]; row t - t_begin, column s - start(t)
  int64_t ld;
  int wq;                     // warps along queries: 1, 2, 4 or 8
  int64_t key_chunk;          // keys per block along grid.y, a multiple of kTileKeys
};

// Keys in one array: row s at k + s * RB, fp8 scale k_scale[s] (null: 1).
struct DenseKeys {
  const uint8_t* k;
  const float* scale;
  int64_t row_bytes;
  __device__ const uint8_t* row(int64_t s, int64_t) const { return k + s * row_bytes; }
  __device__ float key_scale(int64_t s, int64_t) const { return scale ? scale[s] : 1.0f; }
};

// Keys in 64-token pages of the indexer cache; `seq` picks the block table row.
struct PagedKeys {
  const uint8_t* cache;
  const int32_t* block_table;  // [n_seq, max_pages]
  int64_t max_pages, page_bytes, row_bytes;
  __device__ const uint8_t* page(int64_t s, int64_t seq) const {
    return cache + static_cast<int64_t>(block_table[seq * max_pages + s / 64]) * page_bytes;
  }
  __device__ const uint8_t* row(int64_t s, int64_t seq) const { return page(s, seq) + (s % 64) * row_bytes; }
  __device__ float key_scale(int64_t s, int64_t seq) const {
    return reinterpret_cast<const float*>(page(s, seq) + 64 * row_bytes)[s % 64];
  }
};

// One m16n8k16 MMA with f32 accumulation; bf16 or f16 operands.
template <bool kBf16>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Two e4m3 values (the low or high half of x) to an f16x2: exact, e4m3 fits f16.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t x, bool high) {
  const uint16_t v = static_cast<uint16_t>(high ? x >> 16 : x & 0xffffu);
  uint32_t r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"(v));
  return r;
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n"); }

__device__ __forceinline__ void query_range(const ScoreArgs& a, int64_t t, int64_t& start, int64_t& end) {
  start = a.row_start ? a.row_start[t] : 0;
  end = a.row_end ? a.row_end[t] : a.q_pos0 + t + 1;
  start = max(start, int64_t{0});
  end = min(end, a.key_limit);
}

// Queries of a block: blockIdx.x * wq * KQ + (query group) * KQ + i. Paged launches have one
// query per block and per sequence (KQ = 1, wq = 1), so the block's first query names the
// sequence whose pages hold the keys.
// HT: head tiles of 8 (heads padded with zero weights); RB: bytes per key row; KQ: queries per warp.
template <int HT, int RB, bool kBf16, int KQ, typename Keys>
__global__ void __launch_bounds__(kThreads) score_kernel(ScoreArgs a, Keys keys) {
  constexpr int kSteps = RB / 32;  // mma K steps
  constexpr int kStride = RB + kRowPad;
  constexpr int kChunks = RB / 16;  // 16-byte pieces per key row
  extern __shared__ __align__(16) unsigned char smem[];
  float* scale_s = reinterpret_cast<float*>(smem + kStages * kTileKeys * kStride);  // [kStages][kTileKeys]
  __shared__ int block_lo, block_hi;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tig = lane % 4;
  const int wq = a.wq;
  const int qg = warp % wq, kg = warp / wq, wk = kWarps / wq;
  const int64_t q_block = static_cast<int64_t>(blockIdx.x) * wq * KQ;
  const int64_t seq = a.t_begin + q_block;  // paged launches only

  // The block's key range: the union of its queries' ranges, cut to this block's chunk.
  if (threadIdx.x == 0) {
    block_lo = INT32_MAX;
    block_hi = 0;
  }
  __syncthreads();
  if (threadIdx.x < wq * KQ) {
    const int64_t t = a.t_begin + q_block + threadIdx.x;
    if (t < a.t_end) {
      int64_t st, en;
      query_range(a, t, st, en);
      if (st < en) {
        atomicMin(&block_lo, static_cast<int>(st));
        atomicMax(&block_hi, static_cast<int>(en));
      }
    }
  }
  __syncthreads();
  const int64_t chunk0 = static_cast<int64_t>(blockIdx.y) * a.key_chunk;
  const int64_t lo = max(static_cast<int64_t>(block_lo), chunk0);
  const int64_t hi = min(static_cast<int64_t>(block_hi), chunk0 + a.key_chunk);
  if (lo >= hi) return;  // block-uniform

  // This warp's queries: q fragments, head weights, ranges.
  constexpr int kMma = kBf16 ? kSteps : 2 * kSteps;  // m16n8k16 steps: head_dim / 16
  uint32_t bq[KQ][HT][kMma][2];
  float wv[KQ][HT][2];
  int64_t q_start[KQ], q_end[KQ], q_t[KQ];
  int64_t warp_lo = INT64_MAX, warp_hi = 0;
#pragma unroll
  for (int i = 0; i < KQ; ++i) {
    const int64_t t = a.t_begin + q_block + qg * KQ + i;
    q_t[i] = t;
    q_start[i] = 0;
    q_end[i] = 0;  // no query: an empty range
    if (t < a.t_end) query_range(a, t, q_start[i], q_end[i]);
    if (q_start[i] < q_end[i]) {
      warp_lo = min(warp_lo, q_start[i]);
      warp_hi = max(warp_hi, q_end[i]);
    }
    const bool valid_t = t < a.t_end;
#pragma unroll
    for (int j = 0; j < HT; ++j) {
      const int h = 8 * j + g;
      const bool valid = valid_t && h < a.n_heads;
      const uint8_t* qrow = a.q + (t * a.n_heads + h) * RB;
#pragma unroll
      for (int k = 0; k < kSteps; ++k) {
        const uint32_t r0 = valid ? __ldg(reinterpret_cast<const uint32_t*>(qrow + k * 32 + tig * 4)) : 0u;
        const uint32_t r1 = valid ? __ldg(reinterpret_cast<const uint32_t*>(qrow + k * 32 + 16 + tig * 4)) : 0u;
        if constexpr (kBf16) {
          bq[i][j][k][0] = r0;
          bq[i][j][k][1] = r1;
        } else {
          bq[i][j][2 * k][0] = e4m3x2_to_f16x2(r0, false);
          bq[i][j][2 * k][1] = e4m3x2_to_f16x2(r0, true);
          bq[i][j][2 * k + 1][0] = e4m3x2_to_f16x2(r1, false);
          bq[i][j][2 * k + 1][1] = e4m3x2_to_f16x2(r1, true);
        }
      }
      const int h0 = 8 * j + 2 * tig;
      wv[i][j][0] = valid_t && h0 < a.n_heads ? a.w[t * a.n_heads + h0] : 0.0f;
      wv[i][j][1] = valid_t && h0 + 1 < a.n_heads ? a.w[t * a.n_heads + h0 + 1] : 0.0f;
    }
  }

  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  auto issue = [&](int64_t base, int stage) {
    const uint32_t dst0 = smem_base + stage * kTileKeys * kStride;
    for (int c = threadIdx.x; c < kTileKeys * kChunks; c += kThreads) {
      const int r = c / kChunks, col = c % kChunks;
      const int64_t s = base + r;
      const bool valid = s < hi;
      const uint8_t* src = keys.row(valid ? s : lo, seq) + col * 16;
      cp_async_16(dst0 + r * kStride + col * 16, src, valid);
    }
    if (threadIdx.x < kTileKeys) {
      const int64_t s = base + threadIdx.x;
      scale_s[stage * kTileKeys + threadIdx.x] = s < hi ? keys.key_scale(s, seq) : 0.0f;
    }
  };

  const int64_t n_tiles = (hi - lo + kTileKeys - 1) / kTileKeys;
  issue(lo, 0);
  cp_async_commit();
  for (int64_t it = 0; it < n_tiles; ++it) {
    const int stage = static_cast<int>(it & 1);
    const int64_t base = lo + it * kTileKeys;
    if (it + 1 < n_tiles) issue(base + kTileKeys, stage ^ 1);
    cp_async_commit();
    cp_async_wait_1();
    __syncthreads();

    const uint32_t tile = smem_base + stage * kTileKeys * kStride;
    for (int mt = kg; mt < kTileKeys / 16; mt += wk) {
      const int64_t key0 = base + mt * 16;
      if (key0 >= hi || key0 >= warp_hi || key0 + 16 <= warp_lo) continue;  // warp-uniform
      float acc[KQ][HT][4];
#pragma unroll
      for (int i = 0; i < KQ; ++i)
#pragma unroll
        for (int j = 0; j < HT; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
      // ldmatrix: lane l addresses row (l & 7) of matrix l / 8; matrices 0..3 = (rows 0-7, bytes
      // 0-15), (rows 8-15, 0-15), (rows 0-7, 16-31), (rows 8-15, 16-31): the A fragment order.
      const int m = lane / 8;
      const uint32_t a_row = tile + (mt * 16 + (m & 1) * 8 + (lane & 7)) * kStride + (m >> 1) * 16;
#pragma unroll
      for (int k = 0; k < kSteps; ++k) {
        uint32_t af[4];
        ldmatrix_x4(af, a_row + k * 32);
        if constexpr (kBf16) {
#pragma unroll
          for (int i = 0; i < KQ; ++i)
#pragma unroll
            for (int j = 0; j < HT; ++j)
              mma_16x8x16<true>(acc[i][j], af[0], af[1], af[2], af[3], bq[i][j][k][0], bq[i][j][k][1]);
        } else {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const uint32_t r0 = af[2 * half], r1 = af[2 * half + 1];  // rows g and g + 8
            const uint32_t a0 = e4m3x2_to_f16x2(r0, false), a1 = e4m3x2_to_f16x2(r1, false);
            const uint32_t a2 = e4m3x2_to_f16x2(r0, true), a3 = e4m3x2_to_f16x2(r1, true);
#pragma unroll
            for (int i = 0; i < KQ; ++i)
#pragma unroll
              for (int j = 0; j < HT; ++j)
                mma_16x8x16<false>(acc[i][j], a0, a1, a2, a3, bq[i][j][2 * k + half][0], bq[i][j][2 * k + half][1]);
          }
        }
      }
      // Lane holds keys key0 + g (c0, c1) and key0 + g + 8 (c2, c3), heads 8j + 2 tig + {0, 1}.
      const float sc0 = scale_s[stage * kTileKeys + mt * 16 + g];
      const float sc1 = scale_s[stage * kTileKeys + mt * 16 + g + 8];
#pragma unroll
      for (int i = 0; i < KQ; ++i) {
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int j = 0; j < HT; ++j) {
          s0 = fmaf(wv[i][j][0], fmaxf(acc[i][j][0], 0.0f), s0);
          s0 = fmaf(wv[i][j][1], fmaxf(acc[i][j][1], 0.0f), s0);
          s1 = fmaf(wv[i][j][0], fmaxf(acc[i][j][2], 0.0f), s1);
          s1 = fmaf(wv[i][j][1], fmaxf(acc[i][j][3], 0.0f), s1);
        }
        s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
        s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
        if (tig < 2) {
          const int64_t s = key0 + g + 8 * tig;
          if (s < hi && s >= q_start[i] && s < q_end[i])
            a.out[(q_t[i] - a.t_begin) * a.ld + (s - q_start[i])] = (tig == 0 ? s0 * sc0 : s1 * sc1);
        }
      }
    }
    __syncthreads();  // the stage is read; the next iteration's issue may overwrite it
  }
}

// Dynamic shared memory of score_kernel for RB bytes per key row.
constexpr int score_smem_bytes(int rb) { return kStages * kTileKeys * (rb + kRowPad) + kStages * kTileKeys * 4; }

// Queries per warp: as many as keep the q fragments within 64 registers (KQ <= 4); the
// fragments are 16-bit (fp8 is widened to f16), head_dim / 16 steps of 2 registers per head tile.
constexpr int queries_per_warp(int ht, int rb, bool bf16) {
  const int regs = ht * (bf16 ? rb / 32 : rb / 16) * 2;
  return regs >= 64 ? 1 : (64 / regs >= 4 ? 4 : 64 / regs);
}

}  // namespace ic::ops::cuda::indexer_detail

// ---- Host side: launches and the one runtime-to-compile-time dispatch of the shapes.
#include "core/cuda_check.h"

namespace ic::ops::cuda::indexer_detail {

template <int HT, int RB, bool kBf16, int KQ, typename Keys>
void launch_score_kernel(const ScoreArgs& a, const Keys& keys, dim3 grid) {
  auto* kernel = score_kernel<HT, RB, kBf16, KQ, Keys>;
  constexpr int smem = score_smem_bytes(RB);
  IC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, kThreads, smem>>>(a, keys);
  IC_CUDA_CHECK_LAUNCH();
}

// Compiled shapes: heads padded to 16, 32 or 64 (HT = 2, 4, 8 tiles of 8), head_dim 64 or 128.
// indexer_cuda.cu checks a shape against this list (indexer_shape_supported) before any launch.
inline bool indexer_shape_supported(int64_t n_heads, int64_t head_dim) {
  return n_heads >= 1 && n_heads <= 64 && (head_dim == 64 || head_dim == 128);
}
inline int head_tiles(int64_t n_heads) { return n_heads <= 16 ? 2 : n_heads <= 32 ? 4 : 8; }

// Calls f.template operator()<HT, RB>() for the compiled shape of (n_heads, head_dim); RB is the
// key row in bytes (head_dim x element size).
template <int kElemBytes, typename F>
void dispatch_shape(int64_t n_heads, int64_t head_dim, F&& f) {
  const int ht = head_tiles(n_heads);
  constexpr int r64 = 64 * kElemBytes, r128 = 128 * kElemBytes;
  if (head_dim == 64) {
    if (ht == 2) return f.template operator()<2, r64>();
    if (ht == 4) return f.template operator()<4, r64>();
    return f.template operator()<8, r64>();
  }
  if (ht == 2) return f.template operator()<2, r128>();
  if (ht == 4) return f.template operator()<4, r128>();
  return f.template operator()<8, r128>();
}

// Instantiation files (built in parallel): dense keys in fp8 or bf16, paged keys in fp8.
void launch_dense_fp8(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const DenseKeys& keys, dim3 grid);
void launch_dense_bf16(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const DenseKeys& keys, dim3 grid);
void launch_paged_fp8(int64_t n_heads, int64_t head_dim, const ScoreArgs& a, const PagedKeys& keys, dim3 grid);

// The Hopper wgmma kernel (indexer_cuda_wgmma.cu): dense e4m3 keys of 128 bytes, 32 or 64 heads
// exactly, blocks of wgmma_queries_per_block queries (grid.x) by key chunks (grid.y, a.key_chunk
// a multiple of 64). n_q_total: the rows of q (its tensor map). indexer_cuda.cu picks it.
inline bool wgmma_shape_supported(int64_t n_heads, int64_t row_bytes) {
  return row_bytes == 128 && (n_heads == 32 || n_heads == 64);
}
int wgmma_queries_per_block(int64_t n_heads);
void launch_dense_fp8_wgmma(int64_t n_heads, const ScoreArgs& a, const DenseKeys& keys, int64_t n_q_total, dim3 grid);

}  // namespace ic::ops::cuda::indexer_detail
