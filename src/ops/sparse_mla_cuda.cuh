#pragma once
// What the two sparse MLA kernels share (sparse_mla_cuda.cu: mma.sync, any sm_80+ GPU;
// sparse_mla_wgmma.cu: Hopper wgmma): the work split over blocks, the partial results of a
// split index list, cp.async, and the gather of fp8 cache rows.
//
// The fp8 cache row (656 bytes, DeepSeek V3.2's layout): 512 e4m3 latent values, 4 fp32 scales
// (one per 128 values), 64 bf16 RoPE values. The kernels dequantise on the way into shared
// memory, to bf16(float(e4m3) * scale), exactly what cpu::dequantize_mla_fp8 computes, so the
// rest of the kernel is the bf16 kernel.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/sparse_mla.h"

namespace ic::ops::cuda::mla {

constexpr int kHeads = 64;  // query heads (rows) per block
constexpr int kTile = 64;   // keys per tile
constexpr int kThreads = 256;
constexpr int kDimQK = 576;
constexpr int kDimV = 512;
constexpr int kChunks = kDimQK / 8;  // 16-byte chunks per bf16 row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Layout {
  int64_t head_blocks;     // ceil(n_heads / 64)
  int64_t splits;          // slices of each index list
  int64_t keys_per_split;  // a multiple of kTile
};

struct Partials {
  float* acc;  // [splits, n_q, n_heads, 512] unnormalised; null when there is one split
  float* ml;   // [splits, n_q, n_heads, 2]: running max (log2 units) and sum
};

// Launchers (no checks; cuda::sparse_mla validates and picks one). Each needs n_tiles >= 0 and
// the shared memory attribute set by its own `prepare` once.
void launch_mma_sync(const SparseMlaParams& p, const Layout& lay, const Partials& part, int64_t blocks);
void launch_wgmma(const SparseMlaParams& p, const Layout& lay, const Partials& part, int64_t blocks);

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills: a skipped key's row is zeros, so 0 * row never makes a NaN.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {  // round to nearest even
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The block's tile of cache row indices: thread `lane` < 8 of warp w holds row 8 w + lane's
// cache row, or -1 (skipped, past key_end, or outside the cache).
__device__ __forceinline__ int32_t tile_row(const SparseMlaParams& p, const int32_t* idx, int64_t key, int64_t key_end) {
  int32_t s = key < key_end ? idx[key] : -1;
  return s >= p.n_kv ? -1 : s;  // outside the cache: skipped like -1
}

// One warp's 8 fp8 rows of a tile, in flight: lane l holds e4m3 bytes 16 l .. 16 l + 15 of each
// row (dims 16 l ..) and that block's scale. Issue the loads early, store once they are needed.
struct Fp8Rows {
  uint4 v[8];
  float s[8];
};

// Loads of rows 8 warp .. + 7 (their cache rows in lanes 0..7 of `row`), and cp.async of their
// RoPE part (bf16 already) to chunks 64..71 of each row through `swz(row, chunk)`.
template <typename Swz>
__device__ __forceinline__ void fp8_issue(Fp8Rows& f, const uint8_t* kv, int32_t row, uint32_t dst, int warp,
                                          int lane, Swz swz) {
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int32_t sr = __shfl_sync(0xffffffffu, row, r);
    if (sr >= 0) {
      const uint8_t* src = kv + static_cast<int64_t>(sr) * kMlaFp8RowBytes;
      f.v[r] = __ldg(reinterpret_cast<const uint4*>(src) + lane);
      f.s[r] = __ldg(reinterpret_cast<const float*>(src + 512) + lane / 8);
    } else {
      f.v[r] = make_uint4(0, 0, 0, 0);
      f.s[r] = 0.0f;
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // 8 rows x 8 RoPE chunks: two per lane
    const int r = lane / 8 + 4 * h, c = lane % 8;
    const int32_t sr = __shfl_sync(0xffffffffu, row, r);
    const uint8_t* src = kv + static_cast<int64_t>(sr >= 0 ? sr : 0) * kMlaFp8RowBytes + 528 + 16 * c;
    cp_async16(dst + swz(8 * warp + r, 64 + c), src, sr >= 0);
  }
}

__device__ __forceinline__ uint32_t dequant2(uint16_t two, float scale) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3);
  const float lo = __half2float(__ushort_as_half(h.x)), hi = __half2float(__ushort_as_half(h.y));
  return pack_bf16(lo * scale, hi * scale);
}

// Dequantise the rows of fp8_issue into bf16 chunks 0..63 of each row.
template <typename Swz>
__device__ __forceinline__ void fp8_store(const Fp8Rows& f, uint8_t* smem, uint32_t dst_off, int warp, int lane,
                                          Swz swz) {
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const uint32_t w[4] = {f.v[r].x, f.v[r].y, f.v[r].z, f.v[r].w};
    uint32_t b[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      b[2 * i] = dequant2(static_cast<uint16_t>(w[i] & 0xffffu), f.s[r]);
      b[2 * i + 1] = dequant2(static_cast<uint16_t>(w[i] >> 16), f.s[r]);
    }
    const int row = 8 * warp + r;
    *reinterpret_cast<uint4*>(smem + dst_off + swz(row, 2 * lane)) = make_uint4(b[0], b[1], b[2], b[3]);
    *reinterpret_cast<uint4*>(smem + dst_off + swz(row, 2 * lane + 1)) = make_uint4(b[4], b[5], b[6], b[7]);
  }
}

}  // namespace ic::ops::cuda::mla
