// Sparse MLA attention on Hopper tensor cores: wgmma (sm_90a), bf16 operands, f32 accumulators.
//
// Same work split as the mma.sync kernel (sparse_mla_cuda.cu): a block owns one token and 64 of
// its query heads and walks the token's index list in tiles of 64 keys, cp.async gathering the
// next tile's cache rows into shared memory while the current one is computed (two buffers; the
// gather is issued right after the score wgmmas, so part of its cost overlaps them).
// Two warpgroups, and each is both a score and an output group:
//   S  = Q K^T     warpgroup w: all 64 heads x keys 32 w .. 32 w + 31 over the 576 dims,
//                  36 wgmma m64n32k16 (A = Q, B = the gathered rows, both from shared memory);
//   softmax        the two groups swap their row maxima through shared memory, so both hold the
//                  same running max, write P = exp2(S - m) as bf16 to shared memory;
//   O += P V       warpgroup w: all 64 heads x dims 256 w .. 256 w + 255, 4 wgmma m64n256k16
//                  (A = P over the 64 keys, B = the same gathered rows read N-major as V).
// So each gathered row is read from shared memory once per 64 heads for S and once for O (the
// mma.sync kernel reads it once per 16 heads), and the accumulators stay at 128 + 16 floats.
//
// Shared memory follows wgmma's 128-byte swizzle: a 64-row tile of 576 dims is 9 column blocks of
// 64 dims; in block b, row r, the 16-byte chunk c (0..7) lives at b * 8192 + r * 128 +
// ((c ^ (r & 7)) << 4), with every block 1024-byte aligned. K-major descriptors (Q, K, P) step
// 32 bytes per k16; V is the same bytes read N-major (leading byte offset 8192 between 64-dim
// blocks, stride byte offset 1024 between 8-key groups).
//
// An fp8 cache (656-byte rows) is dequantised on the way in: the tile's e4m3 bytes are loaded to
// registers when the tile is asked for and stored as bf16 after the next scores, so the loads
// overlap the compute like cp.async does; the RoPE part travels by cp.async.
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "ops/sparse_mla.h"
#include "ops/sparse_mla_cuda.cuh"

namespace ic::ops::cuda::mla {

namespace {

constexpr int kBlockBytes = kTile * 128;       // one 64-dim column block of 64 rows: 8192
constexpr int kTileBytes = 9 * kBlockBytes;    // 576 dims: 73,728
// Shared memory map (bytes from a 1024-aligned base).
constexpr int kQOff = 0;
constexpr int kKvOff = kQOff + kTileBytes;
constexpr int kPOff = kKvOff + 2 * kTileBytes;   // P: [64 rows][64 keys] bf16, one swizzled block
constexpr int kRedOff = kPOff + kBlockBytes;     // row max of each key half: [2][64] f32
constexpr int kLOff = kRedOff + 2 * kHeads * 4;  // final l of each key half: [2][64] f32
constexpr int kValidOff = kLOff + 2 * kHeads * 4;  // key validity of each buffer: [2][64] i32
constexpr int kSmemBytes = kValidOff + 2 * kTile * 4 + 1024;  // + room to align: 231,936

__device__ __forceinline__ uint32_t swz128(int row, int chunk) {
  return static_cast<uint32_t>((chunk >> 3) * kBlockBytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Shared-memory matrix descriptor, 128-byte swizzle.
__device__ __forceinline__ uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | static_cast<uint64_t>(lbo >> 4) << 16 |
         static_cast<uint64_t>(sbo >> 4) << 32 | uint64_t{1} << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Generic-proxy writes to shared memory (cp.async, st.shared) before wgmma reads them.
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins accumulator registers in place around the asynchronous wgmma (nothing is moved across).
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x 32] += A[64 x 16] B[16 x 32], A and B through shared-memory descriptors.
__device__ __forceinline__ void wgmma_m64n32(float (&d)[16], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "%16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(1));
}

// D[64 x 256] += A[64 x 16] B[16 x 256], A and B through shared-memory descriptors; B N-major.
__device__ __forceinline__ void wgmma_m64n256_tb(float (&d)[128], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(a), "l"(b), "r"(1));
}


template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_wgmma_kernel(SparseMlaParams p, Layout lay, Partials part) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  float* red_max = reinterpret_cast<float*>(smem + kRedOff);
  float* l_s = reinterpret_cast<float*>(smem + kLOff);
  int32_t* valid_s = reinterpret_cast<int32_t*>(smem + kValidOff);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q4 = lane % 4;  // accumulator fragment coordinates
  int64_t b = blockIdx.x;
  const int64_t split = b % lay.splits;
  b /= lay.splits;
  const int64_t hb = b % lay.head_blocks;
  const int64_t t = b / lay.head_blocks;
  const int64_t h0 = hb * kHeads;
  const int32_t* idx = p.indices + t * p.topk_k;
  const int64_t key_begin = split * lay.keys_per_split;
  const int64_t key_end = min(key_begin + lay.keys_per_split, p.topk_k);
  const int n_tiles = static_cast<int>(((key_end > key_begin ? key_end - key_begin : int64_t{0}) + kTile - 1) / kTile);
  const auto swz = [](int row, int chunk) { return swz128(row, chunk); };

  // 64 rows of 576 bf16 into the swizzled tile at dst; warp w copies rows 8w .. 8w + 7;
  // row_src(row) is the source row or null (zero-fill).
  const auto gather = [&](uint32_t dst, auto row_src) {
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int row = warp * 8 + r;
      const uint16_t* src = row_src(row);
      const char* s = reinterpret_cast<const char*>(src ? src : p.q);
      for (int c = lane; c < kChunks; c += 32) cp_async16(dst + swz128(row, c), s + 16 * c, src != nullptr);
    }
  };
  Fp8Rows f8;  // the fp8 tile in flight (kFp8 only)
  const auto issue_tile = [&](int buf, int64_t j0) {
    const int32_t s = tile_row(p, idx, j0 + warp * 8 + (lane & 7), key_end);
    if (lane < 8) valid_s[buf * kTile + warp * 8 + lane] = s >= 0;
    const uint32_t dst = base + kKvOff + buf * kTileBytes;
    if constexpr (kFp8) {
      fp8_issue(f8, p.kv_fp8, s, dst, warp, lane, swz);
    } else {
      gather(dst, [&](int row) -> const uint16_t* {
        const int32_t sr = __shfl_sync(0xffffffffu, s, row & 7);
        return sr >= 0 ? p.kv + static_cast<int64_t>(sr) * kDimQK : nullptr;
      });
    }
  };
  const auto finish_tile = [&](int buf) {
    if constexpr (kFp8) fp8_store(f8, smem, kKvOff + buf * kTileBytes, warp, lane, swz);
  };

  gather(base + kQOff, [&](int row) -> const uint16_t* {
    const int64_t h = h0 + row;
    return h < p.n_heads ? p.q + (t * p.n_heads + h) * kDimQK : nullptr;
  });
  if (n_tiles > 0) {
    issue_tile(0, key_begin);
    finish_tile(0);
  }
  cp_async_commit();

  const int wg = warp >> 2, wi = warp & 3;  // warpgroup: key half for S, dim half for O
  const int row0 = 16 * wi + g, row1 = row0 + 8;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  const float scale_log2 = p.scale * kLog2e;

  for (int j = 0; j < n_tiles; ++j) {
    cp_async_wait_all();
    fence_async_smem();
    __syncthreads();  // tile j landed for everyone; tile j - 1 and its P are no longer read
    const bool more = j + 1 < n_tiles;
    const int buf = j & 1;
    const uint32_t kb = base + kKvOff + buf * kTileBytes;

    // Scores of keys 32 wg .. + 31.
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.0f;
    fence_regs(s);
    wgmma_fence();
#pragma unroll
    for (int blk = 0; blk < 9; ++blk)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n32(s, desc(base + kQOff + blk * kBlockBytes + 32 * kk, 16, 1024),
                     desc(kb + blk * kBlockBytes + wg * 32 * 128 + 32 * kk, 16, 1024));
    wgmma_commit();
    // While the tensor cores compute the scores, ask for the next tile (the other buffer).
    if (more) issue_tile((j + 1) & 1, key_begin + static_cast<int64_t>(j + 1) * kTile);
    cp_async_commit();
    wgmma_wait0();
    fence_regs(s);

    // s[4 nt + e]: row (e < 2 ? row0 : row1), key 32 wg + 8 nt + 2 q4 + (e & 1).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int key = 32 * wg + 8 * (i >> 2) + 2 * q4 + (i & 1);
      s[i] = valid_s[buf * kTile + key] ? s[i] * scale_log2 : -INFINITY;
      mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    if (q4 == 0) {
      red_max[wg * kHeads + row0] = mx[0];
      red_max[wg * kHeads + row1] = mx[1];
    }
    __syncthreads();  // both key halves' maxima are in

    float corr[2], m_use[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = r ? row1 : row0;
      const float m_new = fmaxf(m_run[r], fmaxf(red_max[row], red_max[kHeads + row]));
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // no valid key yet: exp2(-inf - 0) = 0
      corr[r] = exp2f(m_run[r] - m_use[r]);
      m_run[r] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[4 * nt + e] = exp2f(s[4 * nt + e] - m_use[e >> 1]);
        sum[e >> 1] += s[4 * nt + e];
      }
      const int chunk = 4 * wg + nt;  // keys 8 chunk .. +7 of the tile
      *reinterpret_cast<uint32_t*>(smem + kPOff + swz128(row0, chunk) + 4 * q4) = pack_bf16(s[4 * nt], s[4 * nt + 1]);
      *reinterpret_cast<uint32_t*>(smem + kPOff + swz128(row1, chunk) + 4 * q4) =
          pack_bf16(s[4 * nt + 2], s[4 * nt + 3]);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      l_run[r] = l_run[r] * corr[r] + sum[r];
    }
    if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {  // skipped once the maxima settle
#pragma unroll
      for (int i = 0; i < 128; ++i) o[i] *= corr[(i >> 1) & 1];
    }
    if (more) finish_tile((j + 1) & 1);  // fp8: the next tile's loads have had the scores' time
    fence_async_smem();
    __syncthreads();  // P (and an fp8 tile) written by everyone

    // O[:, 256 wg ..] += P V.
    fence_regs(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      wgmma_m64n256_tb(o, desc(base + kPOff + 32 * kk, 16, 1024),
                       desc(kb + 4 * wg * kBlockBytes + 16 * kk * 128, kBlockBytes, 1024));
    }
    wgmma_commit();
    wgmma_wait0();
    fence_regs(o);
  }
  cp_async_wait_all();

  if (q4 == 0) {
    l_s[wg * kHeads + row0] = l_run[0];
    l_s[wg * kHeads + row1] = l_run[1];
  }
  __syncthreads();

  // o[4 nt + e]: row (e < 2 ? row0 : row1), dim 256 wg + 8 nt + 2 q4 + (e & 1).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r ? row1 : row0;
    const int64_t h = h0 + row;
    if (h >= p.n_heads) continue;
    const float l = l_s[row] + l_s[kHeads + row], m = m_run[r];
    const int64_t o_row = t * p.n_heads + h;
    if (part.acc == nullptr) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no valid key: zeros
      float* dst = p.out + o_row * kDimV + 256 * wg + 2 * q4;
#pragma unroll
      for (int nt = 0; nt < 32; ++nt)
        *reinterpret_cast<float2*>(dst + 8 * nt) = make_float2(o[4 * nt + 2 * r] * inv, o[4 * nt + 2 * r + 1] * inv);
      if (p.lse && wg == 0 && q4 == 0) p.lse[o_row] = l > 0.0f ? m * kLn2 + logf(l) : -INFINITY;
    } else {
      const int64_t po = split * p.n_q * p.n_heads + o_row;
      float* dst = part.acc + po * kDimV + 256 * wg + 2 * q4;
#pragma unroll
      for (int nt = 0; nt < 32; ++nt)
        *reinterpret_cast<float2*>(dst + 8 * nt) = make_float2(o[4 * nt + 2 * r], o[4 * nt + 2 * r + 1]);
      if (wg == 0 && q4 == 0) {
        part.ml[2 * po] = m;
        part.ml[2 * po + 1] = l;
      }
    }
  }
#else
  __trap();  // built without sm_90a: cuda::sparse_mla never picks this kernel there
#endif
}

}  // namespace

void launch_wgmma(const SparseMlaParams& p, const Layout& lay, const Partials& part, int64_t blocks) {
  const auto kernel = p.kv_fp8 ? sparse_mla_wgmma_kernel<true> : sparse_mla_wgmma_kernel<false>;
  IC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  kernel<<<static_cast<unsigned>(blocks), kThreads, kSmemBytes>>>(p, lay, part);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace ic::ops::cuda::mla
