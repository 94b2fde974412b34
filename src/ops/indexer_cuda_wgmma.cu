// The indexer's fp8 score kernel on Hopper's warpgroup tensor-core path (wgmma, sm_90a), for
// dense e4m3 keys with head_dim 128 and 32 or 64 heads: indexer_cuda.cu sends those shapes here
// and every other shape to the mma.sync kernel (indexer_cuda_kernel.cuh).
//
//   score[t, s] = k_scale[s] * sum_h w[t, h] * ReLU(q[t, h, :] . k[s, :])
//
// As in the mma.sync kernel, M = keys, N = (query, head) pairs, K = head_dim, so the ReLU, the
// head weights and the head sum stay in registers: a wgmma accumulator gives each warp 16 keys
// (rows g and g + 8 of its slice) x N columns in m16n8 fragments, lane columns 8 j + 2 tig + {0, 1}.
//
// A block is a producer warpgroup and three consumer warpgroups. One producer thread brings
// each consumer's 128 q rows once (2 queries of 64 heads or 4 of 32) and then key tiles of 64
// rows, all by TMA (cp.async.bulk.tensor) into 128-byte-swizzled shared memory, through kStagesW
// stages with full/empty mbarriers; it then gives most of its registers to the consumers
// (setmaxnreg). Each consumer warpgroup multiplies every key tile (A, 64 x 128 bytes) by its q
// rows (B, 128 x 128 bytes) with four m64n128k32 e4m3 wgmmas into f32 accumulators, frees the
// stage, and runs the epilogue (ReLU, weights, head sum, k_scale, masked store) while the other
// warpgroups' wgmmas use the tensor cores. Each (t, s) is one chain of four wgmmas in a fixed
// order, so results are bitwise reproducible and independent of the launch's split (the grid
// splits keys along y like the mma.sync kernel). Hopper's fp8 MMA accumulates with about 14
// significant bits (not IEEE f32): the tests' tolerance for fp8 says so.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/indexer_cuda_kernel.cuh"

namespace ic::ops::cuda::indexer_detail {
namespace {

constexpr int kWgKeys = 64;                    // keys per tile: the wgmma M
constexpr int kRowBytes = 128;                 // head_dim 128, e4m3
constexpr int kConsumers = 3;                  // consumer warpgroups
constexpr int kQRows = 128;                    // q rows per consumer warpgroup: the wgmma N
constexpr int kStagesW = 8;                    // key tiles in flight
constexpr int kTileBytes = kWgKeys * kRowBytes;
constexpr int kQBytes = kConsumers * kQRows * kRowBytes;
constexpr int kWgThreads = (kConsumers + 1) * 128;  // + one producer warpgroup
constexpr int kWgSmem = 1024 + kQBytes + kStagesW * kTileBytes;  // + alignment slack
// Registers: 65536 / kWgThreads at entry; the producer keeps 40, the consumers share the rest.
constexpr int kConsumerRegs = (65536 - 40 * 128) / (kConsumers * 128) / 8 * 8;

// One m64n128k32 e4m3 x e4m3 -> f32 wgmma, A and B in shared memory (descriptors);
// scale_d 0: d = A B, 1: d += A B.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                      uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// A 2-D box of the tensor map into shared memory, completing on `bar`; c0 = byte column, c1 = row.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle: rows of 128
// bytes, 8-row groups 1024 bytes apart (stride byte offset), start 16-byte units in bits 0-13,
// swizzle mode 1 (128 B) in bits 62-63. A K step of 32 bytes moves the start by 32 bytes.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3ffffu) >> 4) | static_cast<uint64_t>(1) << 16 |
         static_cast<uint64_t>(1024 >> 4) << 32 | static_cast<uint64_t>(1) << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of the accumulators across the wgmma issue and wait.
__device__ __forceinline__ void fence_acc(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// H heads per query (32 or 64); a consumer warpgroup has 128 / H queries.
template <int H>
__global__ void __launch_bounds__(kWgThreads, 1)
    score_wgmma_kernel(ScoreArgs a, const float* __restrict__ k_scale, const __grid_constant__ CUtensorMap kmap,
                       const __grid_constant__ CUtensorMap qmap) {
  constexpr int kQw = 128 / H;   // queries per consumer warpgroup
  constexpr int kQb = kConsumers * kQw;  // queries per block
  constexpr int kHt = H / 8;     // n8 tiles per query
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kStagesW], empty_bar[kStagesW], q_bar;
  __shared__ int block_lo, block_hi;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_block = static_cast<int64_t>(blockIdx.x) * kQb;

  // The block's key range: the union of its queries' ranges, cut to this block's chunk.
  if (threadIdx.x == 0) {
    block_lo = INT32_MAX;
    block_hi = 0;
  }
  __syncthreads();
  if (threadIdx.x < kQb) {
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
  const int n_tiles = static_cast<int>((hi - lo + kWgKeys - 1) / kWgKeys);

  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t q_smem = (raw + 1023u) & ~1023u;  // the 128-byte swizzle repeats every 1024 bytes
  const uint32_t k_smem = q_smem + kQBytes;
  const uint32_t full0 = static_cast<uint32_t>(__cvta_generic_to_shared(full_bar));
  const uint32_t empty0 = static_cast<uint32_t>(__cvta_generic_to_shared(empty_bar));
  const uint32_t qbar = static_cast<uint32_t>(__cvta_generic_to_shared(&q_bar));
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStagesW; ++i) {
      mbar_init(full0 + 8 * i, 1);
      mbar_init(empty0 + 8 * i, 4 * kConsumers);  // lane 0 of each consumer warp
    }
    mbar_init(qbar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warp >= 4 * kConsumers) {  // producer warpgroup: one thread works
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 4 * kConsumers && lane == 0) {
      mbar_expect_tx(qbar, kQBytes);
      for (int c = 0; c < kConsumers; ++c)
        tma_load_2d(q_smem + c * kQRows * kRowBytes, &qmap, 0,
                    static_cast<int>((a.t_begin + q_block) * H + c * kQRows), qbar);
      for (int it = 0; it < n_tiles; ++it) {
        const int stage = it % kStagesW;
        mbar_wait(empty0 + 8 * stage, ((it / kStagesW) & 1) ^ 1);
        mbar_expect_tx(full0 + 8 * stage, kTileBytes);
        tma_load_2d(k_smem + stage * kTileBytes, &kmap, 0, static_cast<int>(lo + int64_t{it} * kWgKeys),
                    full0 + 8 * stage);
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  // Consumer warpgroup wg: queries q_block + wg * kQw + i, q rows [wg * 128, wg * 128 + 128).
  const int wg = warp / 4, wr = warp % 4;  // wr: the warp's 16-key slice of a tile
  const int g = lane / 4, tig = lane % 4;
  float wv[kQw][kHt][2];
  int32_t q_start[kQw], q_end[kQw];  // key positions fit int32 (indexer_cuda.cu checks)
#pragma unroll
  for (int i = 0; i < kQw; ++i) {
    const int64_t t = a.t_begin + q_block + wg * kQw + i;
    int64_t st = 0, en = 0;  // no query: an empty range
    if (t < a.t_end) query_range(a, t, st, en);
    q_start[i] = static_cast<int32_t>(st);
    q_end[i] = static_cast<int32_t>(en);
#pragma unroll
    for (int j = 0; j < kHt; ++j) {
      const int h0 = 8 * j + 2 * tig;
      wv[i][j][0] = t < a.t_end ? a.w[t * H + h0] : 0.0f;
      wv[i][j][1] = t < a.t_end ? a.w[t * H + h0 + 1] : 0.0f;
    }
  }
  const int32_t hi32 = static_cast<int32_t>(hi);
  float* const out0 = a.out + q_block * a.ld;  // row of the block's first query
  const uint64_t desc_q = sw128_desc(q_smem + wg * 128 * kRowBytes);
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  // Waits for tile `it` and issues its four K steps into d.
  auto issue = [&](float (&d)[64], int it) {
    const int stage = it % kStagesW;
    mbar_wait(full0 + 8 * stage, (it / kStagesW) & 1);
    const uint64_t desc_k = sw128_desc(k_smem + stage * kTileBytes);
    fence_acc(d);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kRowBytes / 32; ++kk)
      wgmma_m64n128k32_e4m3(d, desc_k + 2 * kk, desc_q + 2 * kk, kk > 0 ? 1u : 0u);  // +32 bytes
    wgmma_commit();
    fence_acc(d);
  };
  // Tile `it` is in d (its wgmmas complete): free its stage, then the epilogue.
  auto finish = [&](float (&d)[64], int it) {
    fence_acc(d);
    if (lane == 0) mbar_arrive(empty0 + 8 * (it % kStagesW));
    const int32_t key0 = static_cast<int32_t>(lo) + it * kWgKeys + 16 * wr + g;  // and key0 + 8
    const float sc0 = key0 >= hi32 ? 0.0f : k_scale ? __ldg(k_scale + key0) : 1.0f;
    const float sc1 = key0 + 8 >= hi32 ? 0.0f : k_scale ? __ldg(k_scale + key0 + 8) : 1.0f;
#pragma unroll
    for (int i = 0; i < kQw; ++i) {
      float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
      for (int j = 0; j < kHt; ++j) {
        const int c = 4 * (i * kHt + j);
        s0 = fmaf(wv[i][j][0], fmaxf(d[c + 0], 0.0f), s0);
        s0 = fmaf(wv[i][j][1], fmaxf(d[c + 1], 0.0f), s0);
        s1 = fmaf(wv[i][j][0], fmaxf(d[c + 2], 0.0f), s1);
        s1 = fmaf(wv[i][j][1], fmaxf(d[c + 3], 0.0f), s1);
      }
      s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
      s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
      s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
      s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
      if (tig < 2) {
        const int32_t s = key0 + 8 * tig;
        if (s < hi32 && s >= q_start[i] && s < q_end[i])
          out0[(wg * kQw + i) * a.ld + (s - q_start[i])] = tig == 0 ? s0 * sc0 : s1 * sc1;
      }
    }
  };

  // One accumulator set: the consumer warpgroups take turns on the tensor cores, one's wgmmas
  // running while the others do their epilogues. (Two sets per warpgroup, the next tile's
  // wgmmas in flight during the epilogue, made ptxas serialise the wgmmas: C7514.)
  mbar_wait(qbar, 0);
  for (int it = 0; it < n_tiles; ++it) {
    issue(acc, it);
    wgmma_wait<0>();
    finish(acc, it);
  }
}

// A 2-D tensor map over rows of 128 bytes (e4m3), boxes of box_rows x 128 bytes, 128-byte
// swizzle; rows past `rows` read as zeros.
CUtensorMap make_row_map(const void* base, int64_t rows, int box_rows) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    IC_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    IC_CHECK(fn && found == cudaDriverEntryPointSuccess, "indexer (cuda): the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap map;
  const cuuint64_t dims[2] = {kRowBytes, static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {kRowBytes};
  const cuuint32_t box[2] = {kRowBytes, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box,
                            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  IC_CHECK(r == CUDA_SUCCESS, "indexer (cuda): cuTensorMapEncodeTiled failed ({})", static_cast<int>(r));
  return map;
}

template <int H>
void launch(const ScoreArgs& a, const DenseKeys& keys, int64_t n_q_total, dim3 grid) {
  auto* kernel = score_wgmma_kernel<H>;
  IC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmem));
  const CUtensorMap kmap = make_row_map(keys.k, a.key_limit, kWgKeys);
  const CUtensorMap qmap = make_row_map(a.q, n_q_total * H, kQRows);  // 128 rows: one warpgroup's
  kernel<<<grid, kWgThreads, kWgSmem>>>(a, keys.scale, kmap, qmap);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace

int wgmma_queries_per_block(int64_t n_heads) { return static_cast<int>(kConsumers * kQRows / n_heads); }

void launch_dense_fp8_wgmma(int64_t n_heads, const ScoreArgs& a, const DenseKeys& keys, int64_t n_q_total, dim3 grid) {
  IC_CHECK(wgmma_shape_supported(n_heads, kRowBytes), "indexer (cuda): no wgmma kernel for {} heads", n_heads);
  if (n_heads == 64)
    launch<64>(a, keys, n_q_total, grid);
  else
    launch<32>(a, keys, n_q_total, grid);
}

}  // namespace ic::ops::cuda::indexer_detail
