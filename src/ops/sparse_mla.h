#pragma once
// Sparse MLA attention in DeepSeek's absorbed (MQA) form, as DSA runs it: every query head
// attends to one shared latent cache through the token's index list.
//   score[t, h, s] = scale * q[t, h, :576] . kv[s, :576]      (512 latent dims + 64 RoPE dims)
//   out[t, h]      = sum_{s in T_t} softmax_s(score[t, h, s]) kv[s, :512]
// The values are the first 512 dims of the same cache row. T_t is row t of indices with -1
// entries skipped; the indices are global rows of the cache (so a paged cache works through
// the index) and all heads of a token share the list. Each entry is one term (a duplicate
// counts twice). A query with no valid entry outputs zeros and an LSE of -inf.
//
// Types: q and the cache are bf16; out and lse are f32 (the engine's residual stream is f32).
// On the CPU an index outside [-1, n_kv) is an ic::Error; on CUDA it is skipped like -1 (checking
// would cost a device-to-host copy per call), so the kernel never reads outside the cache.
//
// Cost per query head and selected key: 2 * (576 + 512) FLOPs; bytes: one 1152-byte cache row
// per selected key and token (shared by its heads), q and out once.
//
// fp8 cache (DeepSeek V3.2's layout, 656 bytes a row): 512 e4m3 latent values, then 4 fp32
// scales (one per 128 values), then the 64 RoPE values in bf16. Its meaning is defined as the
// bf16 row dequantize_mla_fp8 makes of it (each latent value bf16(float(e4m3) * scale), f32
// product rounded to nearest even, then to bf16): the kernels dequantise the same way on the way
// in, so an fp8 cache attends exactly like its dequantised bf16 copy.
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

constexpr int64_t kMlaDimQK = 576;      // latent 512 + RoPE 64
constexpr int64_t kMlaDimV = 512;       // the latent part, also the value
constexpr int64_t kMlaFp8RowBytes = 656;  // 512 e4m3 + 4 fp32 scales + 64 bf16

// Which CUDA kernel runs (one dispatch point, cuda::sparse_mla). Auto: wgmma on Hopper (sm_90),
// mma.sync elsewhere. Tests and benchmarks name one to compare them.
enum class MlaKernel : uint8_t { Auto, MmaSync, Wgmma };

struct SparseMlaParams {
  const uint16_t* q;       // [n_q, n_heads, 576] bf16 bits
  const uint16_t* kv;      // [n_kv, 576] bf16 bits, one row per cached token
  const int32_t* indices;  // [n_q, topk_k]; -1 = no token, else a row of kv
  float* out;              // [n_q, n_heads, 512]
  float* lse;              // [n_q, n_heads] natural-log sum of exp(scores); may be null
  int64_t n_q;
  int64_t n_heads;
  int64_t n_kv;
  int64_t topk_k;
  float scale;
  const uint8_t* kv_fp8 = nullptr;  // [n_kv, 656] fp8 rows instead of kv (then kv is null)
  MlaKernel kernel = MlaKernel::Auto;
};

// One cache row to its fp8 form: per block of 128 latent values scale = max|x| / 448 (1 for an
// all-zero block), e4m3 = round(x / scale) saturated; the RoPE part is copied.
void quantize_mla_fp8(const uint16_t* row_bf16, uint8_t* row_fp8);
// And back, as the kernels read it (see above).
void dequantize_mla_fp8(const uint8_t* row_fp8, uint16_t* row_bf16);

// q: BF16 [n_q, n_heads, 576]; kv: BF16 [n_kv, 576], or the fp8 rows as F8_E4M3 [n_kv, 656]
// (bytes: the scales and RoPE values ride inside); indices: I32 [n_q, k];
// out: F32 [n_q, n_heads, 512]; lse: F32 [n_q, n_heads] or an undefined Tensor.
void sparse_mla(const Tensor& q, const Tensor& kv, const Tensor& indices, float scale, Tensor& out,
                Tensor* lse = nullptr, MlaKernel kernel = MlaKernel::Auto);

namespace cpu {
// The plain reference: double accumulation, one (token, head) at a time; checks every index
// first. The CPU path of the front is this reference (parallel over tokens). An fp8 cache is
// dequantised first (dequantize_mla_fp8), the kernel ignored.
void sparse_mla_reference(const SparseMlaParams& p);
void sparse_mla(const SparseMlaParams& p);
}  // namespace cpu
namespace cuda {
// Tensor cores: Hopper wgmma (sparse_mla_wgmma.cu) or mma.sync (sparse_mla_cuda.cu), by
// p.kernel; bf16 or fp8 cache. n_heads is padded to a multiple of 64 inside (so 16 or 32 heads
// pay for 64). Deterministic: how the index list splits over blocks depends only on the shapes.
void sparse_mla(const SparseMlaParams& p);
}

}  // namespace ic::ops
