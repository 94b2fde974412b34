// Sparse MLA attention (DeepSeek's absorbed MQA form) on tensor cores: mma.sync m16n8k16 bf16
// with f32 accumulators; the portable kernel (any sm_80+ GPU) and the dispatch point. The Hopper
// kernel (wgmma) is sparse_mla_wgmma.cu; both share sparse_mla_cuda.cuh.
//
// A block owns one token and 64 of its query heads (rows) and walks the token's index list in
// tiles of 64 keys. cp.async gathers the tile's 64 selected cache rows (576 bf16 each) into shared
// memory while the previous tile is computed (two buffers); the query rows stay in shared memory
// for the whole walk. Each gathered tile serves all 64 heads twice: as K (all 576 dims) for the
// scores and as V (its first 512 dims) for the output, so a cache row crosses memory once per
// token and head block.
//
// Eight warps, two roles per tile:
//   scores  warp (rg, c): S[16 rows of group rg, 32 keys of half c] = Q K^T over 576 dims; the
//           pair (rg, 0), (rg, 1) agree on each row's running max through shared memory, then
//           write P = exp(S - m) as bf16 and the rescale factor of each row;
//   output  warp (rh, dq): O[32 rows of half rh, 128 dims of quarter dq] += P V over the 64 keys.
// Splitting the output four ways by dims keeps its accumulators at 128 registers a thread; the
// 16x32 score tiles are the shape that reads the fewest shared-memory bytes for 8 warps.
//
// Shared memory rows are 1152 bytes (72 chunks of 16 bytes); chunk c of row r is stored at chunk
// c ^ (r & 7), so the 8 rows one ldmatrix phase reads land in 8 different bank groups.
//
// Decode (few tokens) splits a token's index list over several blocks; each split writes its
// unnormalised output with (m, l) and a second kernel merges them. How many splits depends only
// on the shapes, so the results are reproducible.
//
// An fp8 cache (656-byte rows) is dequantised to bf16 on the way into shared memory; here
// synchronously (plain loads, convert, store: the 128 accumulator registers leave no room to
// keep a tile's loads in flight across the compute), so this path is the correct fallback, not
// the fast one.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda_check.h"
#include "ops/sparse_mla.h"
#include "ops/sparse_mla_cuda.cuh"

namespace ic::ops::cuda {

namespace mla {
namespace {

constexpr int kRowBytes = kDimQK * 2;  // 1152
constexpr int kTileBytes = kTile * kRowBytes;

// Shared memory map (bytes).
constexpr int kQOff = 0;
constexpr int kKvOff = kQOff + kHeads * kRowBytes;
constexpr int kPOff = kKvOff + 2 * kTileBytes;          // P: [64 rows][64 keys] bf16
constexpr int kRedOff = kPOff + kHeads * kTile * 2;     // row max of each key half: [2][64] f32
constexpr int kCorrOff = kRedOff + 2 * kHeads * 4;      // rescale factor per row: [64] f32
constexpr int kLOff = kCorrOff + kHeads * 4;            // final l of each key half: [2][64] f32
constexpr int kMOff = kLOff + 2 * kHeads * 4;           // final m per row: [64] f32
constexpr int kValidOff = kMOff + kHeads * 4;           // key validity of each buffer: [2][64] i32
constexpr int kSmemBytes = kValidOff + 2 * kTile * 4;   // 231,424 of the 232,448 a block may have

__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}
__device__ __forceinline__ uint32_t swz_p(int row, int chunk) {  // P rows: 8 chunks
  return static_cast<uint32_t>(row * (kTile * 2) + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 64 rows of 576 bf16 from global memory into swizzled shared memory; warp w copies rows
// 8w .. 8w + 7. row_src(r) gives the source row or null (zero-fill).
template <typename RowSrc>
__device__ __forceinline__ void gather_rows(uint32_t dst, int warp, int lane, RowSrc row_src) {
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int row = warp * 8 + r;
    const uint16_t* src = row_src(row);
    const bool valid = src != nullptr;
    const char* s = reinterpret_cast<const char*>(valid ? src : row_src(-1));
    for (int c = lane; c < kChunks; c += 32) cp_async16(dst + swz(row, c), s + 16 * c, valid);
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_kernel(SparseMlaParams p, Layout lay, Partials part) {
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  float* red_max = reinterpret_cast<float*>(smem + kRedOff);
  float* corr_s = reinterpret_cast<float*>(smem + kCorrOff);
  float* l_s = reinterpret_cast<float*>(smem + kLOff);
  float* m_s = reinterpret_cast<float*>(smem + kMOff);
  int32_t* valid_s = reinterpret_cast<int32_t*>(smem + kValidOff);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, q4 = lane % 4;  // mma fragment coordinates
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

  // Tile loader: lane i < 8 of each warp reads the index of row 8 warp + i, then the warp shares it.
  auto load_tile = [&](int buf, int64_t j0) {
    const int32_t s = tile_row(p, idx, j0 + warp * 8 + (lane & 7), key_end);
    if (lane < 8) valid_s[buf * kTile + warp * 8 + lane] = s >= 0;
    if constexpr (kFp8) {  // dequantised on the way in, synchronously: no registers to spare here
      const auto swz_kv = [](int row, int chunk) { return swz(row, chunk); };
      Fp8Rows f;
      fp8_issue(f, p.kv_fp8, s, base + kKvOff + buf * kTileBytes, warp, lane, swz_kv);
      fp8_store(f, smem, kKvOff + buf * kTileBytes, warp, lane, swz_kv);
      return;
    }
    gather_rows(base + kKvOff + buf * kTileBytes, warp, lane, [&](int row) -> const uint16_t* {
      if (row < 0) return p.kv;
      const int32_t sr = __shfl_sync(0xffffffffu, s, row & 7);
      return sr >= 0 ? p.kv + static_cast<int64_t>(sr) * kDimQK : nullptr;
    });
  };

  gather_rows(base + kQOff, warp, lane, [&](int row) -> const uint16_t* {
    if (row < 0) return p.q;
    const int64_t h = h0 + row;
    return h < p.n_heads ? p.q + (t * p.n_heads + h) * kDimQK : nullptr;
  });
  if (n_tiles > 0) load_tile(0, key_begin);
  cp_async_commit();

  // Score-warp role: rows 16 rg .. +15, keys 32 c .. +31 of each tile. Rows g and g + 8 per thread.
  const int rg = warp & 3, c = warp >> 2;
  const int srow0 = 16 * rg + g, srow1 = srow0 + 8;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  // Output-warp role: rows 32 rh .. +31 (two m16 tiles), dims 128 dq .. +127 (16 n8 tiles).
  const int rh = warp >> 2, dq = warp & 3;
  float o[2][16][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][nt][e] = 0.0f;
  const float scale_log2 = p.scale * kLog2e;

  for (int j = 0; j < n_tiles; ++j) {
    cp_async_wait_all();
    __syncthreads();  // tile j landed for everyone; tile j - 1 and its P are no longer read
    if (j + 1 < n_tiles) load_tile((j + 1) & 1, key_begin + static_cast<int64_t>(j + 1) * kTile);
    cp_async_commit();
    const int buf = j & 1;
    const uint32_t kb = base + kKvOff + buf * kTileBytes;

    // Scores.
    float s[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll 4
    for (int kk = 0; kk < kDimQK / 16; ++kk) {
      uint32_t a[4];
      ldsm_x4(base + kQOff + swz(16 * rg + (lane & 15), 2 * kk + (lane >> 4)), a);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t bf[4];
        ldsm_x4(kb + swz(32 * c + 16 * np + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)), bf);
        mma(s[2 * np], a, bf[0], bf[1]);
        mma(s[2 * np + 1], a, bf[2], bf[3]);
      }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = 32 * c + 8 * nt + 2 * q4 + (e & 1);
        s[nt][e] = valid_s[buf * kTile + key] ? s[nt][e] * scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    if (q4 == 0) {
      red_max[c * kHeads + srow0] = mx[0];
      red_max[c * kHeads + srow1] = mx[1];
    }
    __syncthreads();  // both key halves' maxima are in

    float corr[2], m_use[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = r ? srow1 : srow0;
      const float m_new = fmaxf(m_run[r], fmaxf(red_max[row], red_max[kHeads + row]));
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // no valid key yet: exp2(-inf - 0) = 0
      corr[r] = exp2f(m_run[r] - m_use[r]);
      m_run[r] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - m_use[e >> 1]);
        sum[e >> 1] += s[nt][e];
      }
      const int chunk = 4 * c + nt;  // keys 8 chunk .. +7 of the tile
      *reinterpret_cast<uint32_t*>(smem + kPOff + swz_p(srow0, chunk) + 4 * q4) = pack_bf16(s[nt][0], s[nt][1]);
      *reinterpret_cast<uint32_t*>(smem + kPOff + swz_p(srow1, chunk) + 4 * q4) = pack_bf16(s[nt][2], s[nt][3]);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      l_run[r] = l_run[r] * corr[r] + sum[r];
    }
    if (c == 0 && q4 == 0) {
      corr_s[srow0] = corr[0];
      corr_s[srow1] = corr[1];
    }
    __syncthreads();  // P and the rescale factors are in

    // Output: O = O * corr + P V.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const float c0 = corr_s[32 * rh + 16 * mt + g], c1 = corr_s[32 * rh + 16 * mt + g + 8];
#pragma unroll
      for (int nt = 0; nt < 16; ++nt) {
        o[mt][nt][0] *= c0;
        o[mt][nt][1] *= c0;
        o[mt][nt][2] *= c1;
        o[mt][nt][3] *= c1;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
        ldsm_x4(base + kPOff + swz_p(32 * rh + 16 * mt + (lane & 15), 2 * kk + (lane >> 4)), a[mt]);
#pragma unroll
      for (int np = 0; np < 8; ++np) {
        uint32_t bf[4];
        ldsm_x4_trans(kb + swz(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3), 16 * dq + 2 * np + (lane >> 4)), bf);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma(o[mt][2 * np], a[mt], bf[0], bf[1]);
          mma(o[mt][2 * np + 1], a[mt], bf[2], bf[3]);
        }
      }
    }
  }
  cp_async_wait_all();

  if (q4 == 0) {
    l_s[c * kHeads + srow0] = l_run[0];
    l_s[c * kHeads + srow1] = l_run[1];
    if (c == 0) {
      m_s[srow0] = m_run[0];
      m_s[srow1] = m_run[1];
    }
  }
  __syncthreads();

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = 32 * rh + 16 * mt + g + 8 * r;
      const int64_t h = h0 + row;
      if (h >= p.n_heads) continue;
      const float l = l_s[row] + l_s[kHeads + row], m = m_s[row];
      const int64_t o_row = t * p.n_heads + h;
      if (part.acc == nullptr) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no valid key: zeros
        float* dst = p.out + o_row * kDimV + 128 * dq + 2 * q4;
#pragma unroll
        for (int nt = 0; nt < 16; ++nt)
          *reinterpret_cast<float2*>(dst + 8 * nt) = make_float2(o[mt][nt][2 * r] * inv, o[mt][nt][2 * r + 1] * inv);
        if (p.lse && dq == 0 && q4 == 0) p.lse[o_row] = l > 0.0f ? m * kLn2 + logf(l) : -INFINITY;
      } else {
        const int64_t po = split * p.n_q * p.n_heads + o_row;
        float* dst = part.acc + po * kDimV + 128 * dq + 2 * q4;
#pragma unroll
        for (int nt = 0; nt < 16; ++nt)
          *reinterpret_cast<float2*>(dst + 8 * nt) = make_float2(o[mt][nt][2 * r], o[mt][nt][2 * r + 1]);
        if (dq == 0 && q4 == 0) {
          part.ml[2 * po] = m;
          part.ml[2 * po + 1] = l;
        }
      }
    }
}

// One block per output row (token, head), 128 threads of 4 dims: merge the splits.
__global__ void combine_kernel(SparseMlaParams p, int64_t splits, Partials part) {
  const int64_t o = blockIdx.x;
  const int64_t rows = p.n_q * p.n_heads;
  float mx = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mx = fmaxf(mx, part.ml[2 * (s * rows + o)]);
  float sum = 0.0f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t s = 0; s < splits; ++s) {
    const float ms = part.ml[2 * (s * rows + o)];
    if (ms == -INFINITY) continue;  // this split had no valid key
    const float w = exp2f(ms - mx);
    sum = fmaf(part.ml[2 * (s * rows + o) + 1], w, sum);
    const float4 a = reinterpret_cast<const float4*>(part.acc + (s * rows + o) * kDimV)[threadIdx.x];
    acc.x = fmaf(a.x, w, acc.x);
    acc.y = fmaf(a.y, w, acc.y);
    acc.z = fmaf(a.z, w, acc.z);
    acc.w = fmaf(a.w, w, acc.w);
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  reinterpret_cast<float4*>(p.out + o * kDimV)[threadIdx.x] =
      make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  if (p.lse && threadIdx.x == 0) p.lse[o] = sum > 0.0f ? mx * kLn2 + logf(sum) : -INFINITY;
}

// Fewest waves times tiles per block: a split that leaves most multiprocessors idle, or one that
// spills into a second, mostly empty wave, is worse than the one between.
Layout choose_layout(const SparseMlaParams& p, int sms) {
  Layout lay{};
  lay.head_blocks = (p.n_heads + kHeads - 1) / kHeads;
  const int64_t base = p.n_q * lay.head_blocks;
  const int64_t tiles = (p.topk_k + kTile - 1) / kTile;
  int64_t best = 1, best_cost = INT64_MAX;
  if (base < sms) {
    for (int64_t s = 1; s <= tiles; ++s) {
      const int64_t cost = ((base * s + sms - 1) / sms) * ((tiles + s - 1) / s);
      if (cost < best_cost) best_cost = cost, best = s;
    }
  }
  lay.keys_per_split = (tiles + best - 1) / best * kTile;
  lay.splits = (p.topk_k + lay.keys_per_split - 1) / lay.keys_per_split;
  return lay;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void launch_mma_sync(const SparseMlaParams& p, const Layout& lay, const Partials& part, int64_t blocks) {
  const auto kernel = p.kv_fp8 ? sparse_mla_kernel<true> : sparse_mla_kernel<false>;
  IC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  kernel<<<static_cast<unsigned>(blocks), kThreads, kSmemBytes>>>(p, lay, part);
  IC_CUDA_CHECK_LAUNCH();
}

}  // namespace mla

// Auto picks the wgmma kernel on sm_90 when this is true (the mma.sync kernel otherwise).
constexpr bool kWgmmaByDefault = true;

void sparse_mla(const SparseMlaParams& p) {
  using namespace mla;
  if (p.n_q == 0 || p.n_heads == 0) return;
  const void* kv = p.kv_fp8 ? static_cast<const void*>(p.kv_fp8) : static_cast<const void*>(p.kv);
  IC_CHECK(aligned16(p.q) && aligned16(kv) && aligned16(p.out),
           "sparse_mla (cuda): q, kv and out must be 16-byte aligned");
  const int64_t rows = p.n_q * p.n_heads;
  if (p.topk_k == 0) {  // the empty sum everywhere
    IC_CUDA_CHECK(cudaMemsetAsync(p.out, 0, static_cast<size_t>(rows * kDimV) * sizeof(float)));
    if (p.lse) {
      std::vector<float> inf(static_cast<size_t>(rows), -INFINITY);
      IC_CUDA_CHECK(cudaMemcpy(p.lse, inf.data(), inf.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    return;
  }
  int device = 0, sms = 0, major = 0;
  IC_CUDA_CHECK(cudaGetDevice(&device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  IC_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const bool wgmma = p.kernel == MlaKernel::Wgmma || (p.kernel == MlaKernel::Auto && kWgmmaByDefault && major == 9);
  IC_CHECK(!wgmma || major == 9, "sparse_mla (cuda): the wgmma kernel needs a Hopper GPU (sm_90), this one is sm_{}x",
           major);
  const Layout lay = choose_layout(p, sms);
  const int64_t blocks = p.n_q * lay.head_blocks * lay.splits;
  IC_CHECK(blocks <= INT32_MAX, "sparse_mla (cuda): {} blocks exceed the CUDA grid", blocks);

  Partials part{nullptr, nullptr};
  void* ws = nullptr;
  if (lay.splits > 1) {
    IC_CUDA_CHECK(
        cudaMallocAsync(&ws, static_cast<size_t>(lay.splits * rows * (kDimV + 2)) * sizeof(float), nullptr));
    part.acc = static_cast<float*>(ws);
    part.ml = part.acc + lay.splits * rows * kDimV;
  }
  if (wgmma)
    launch_wgmma(p, lay, part, blocks);
  else
    launch_mma_sync(p, lay, part, blocks);
  if (lay.splits > 1) {
    combine_kernel<<<static_cast<unsigned>(rows), kDimV / 4>>>(p, lay.splits, part);
    IC_CUDA_CHECK_LAUNCH();
    IC_CUDA_CHECK(cudaFreeAsync(ws, nullptr));
  }
}

}  // namespace ic::ops::cuda
