// The routed experts on the GPU, by token permutation and grouped GEMMs:
//   1. count   each expert's (token, slot) pairs (integer atomics: the counts are exact), and the
//              ids outside [0, n_experts) in one extra counter;
//   2. place   one block per expert finds its pairs in pair order (a stable counting sort: row
//              offset of the expert + rank among its pairs), records row_of_pair / token_of_row,
//              and writes the expert's pointers for the grouped GEMM at its rank among the
//              experts that have pairs;
//   3. the host reads the counts (the one host sync: cuBLAS's grouped GEMM takes the group sizes
//      from host arrays), and refuses bad ids;
//   4. gather  x rows into expert order;
//   5. GEMM    h = xp @ W_gate_up[e]^T per expert (bf16 out, f32 accumulation);
//   6. SwiGLU  act = silu(h[:, :inter]) * h[:, inter:] in f32, rounded to bf16;
//   7. GEMM    y = act @ W_down[e]^T per expert (bf16 out), into xp's memory (dead by then);
//   8. combine out[t] = sum_s weights[t, s] * y[row_of_pair[t, s]] in f32, s = 0, 1, ...
// Every step is a fixed function of the ids, so the output is the same bits run to run (cuBLAS
// gives one algorithm per shape; the rows an expert's GEMM sees are in pair order).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/cublas_check.h"
#include "core/cuda_check.h"
#include "core/cuda_memory.h"
#include "ops/moe_experts.h"

namespace ic::ops::cuda {

namespace {

constexpr int kPlaceThreads = 512;
constexpr int kPairsPerThread = 8;  // a place block reads 4096 consecutive pairs per step
constexpr int64_t kMaxExperts = 4096;

// A cuBLAS handle per host thread and device, for the reasons ops/linear_cuda.cu gives (creation
// costs milliseconds; one thread at a time; the op carries no context yet).
class BlasHandle {
 public:
  explicit BlasHandle(int device) : device_(device) {
    IC_CUBLAS_CHECK(cublasCreate(&handle_));
    IC_CUBLAS_CHECK(cublasSetStream(handle_, nullptr));  // the legacy default stream, like every op
  }
  ~BlasHandle() { cublasDestroy(handle_); }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  int device() const { return device_; }
  cublasHandle_t get() const { return handle_; }

 private:
  int device_ = -1;
  cublasHandle_t handle_ = nullptr;
};

cublasHandle_t blas_for_current_device() {
  thread_local std::unique_ptr<BlasHandle> h;
  int dev = 0;
  IC_CUDA_CHECK(cudaGetDevice(&dev));
  if (!h || h->device() != dev) {
    h.reset();
    h = std::make_unique<BlasHandle>(dev);
  }
  return h->get();
}

struct Ptrs {  // the grouped GEMMs' device pointer arrays, [n_experts] each, compacted
  const void** a1;
  const void** b1;
  void** c1;
  const void** a2;
  const void** b2;
  void** c2;
};

__global__ void count_kernel(const int32_t* ids, int64_t n_pairs, int n_experts, int32_t* counts) {
  extern __shared__ int32_t hist[];  // [n_experts + 1]
  for (int i = threadIdx.x; i <= n_experts; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = ids[i];
    atomicAdd(&hist[e >= 0 && e < n_experts ? e : n_experts], 1);
  }
  __syncthreads();
  for (int i = threadIdx.x; i <= n_experts; i += blockDim.x)
    if (hist[i]) atomicAdd(&counts[i], hist[i]);
}

// Sum of v over the block (every thread gets it); `scratch` holds one int per warp.
__device__ int block_sum(int v, int* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

// Exclusive prefix of v over the threads of the block in thread order; *total gets the sum.
__device__ int block_exclusive_scan(int v, int* scratch, int* total) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (w < warp) before += scratch[w];
    all += scratch[w];
  }
  *total = all;
  return before + incl - v;
}

struct PlaceArgs {
  const int32_t* ids;
  const int32_t* counts;
  int32_t* offsets;
  int32_t* row_of_pair;
  int32_t* token_of_row;
  Ptrs ptrs;
  const uint16_t* w_gate_up;
  const uint16_t* w_down;
  uint16_t* xp;
  uint16_t* h;
  uint16_t* act;
  int64_t n_pairs, dim, inter;
  int top_k, n_experts;
};

__global__ void place_kernel(PlaceArgs a) {
  __shared__ int scratch[kPlaceThreads / 32];
  const int e = blockIdx.x;
  int before = 0, nonempty_before = 0;
  for (int j = threadIdx.x; j < e; j += blockDim.x) {
    before += a.counts[j];
    nonempty_before += a.counts[j] > 0;
  }
  const int offset = block_sum(before, scratch);
  const int group = block_sum(nonempty_before, scratch);
  const int count = a.counts[e];
  if (threadIdx.x == 0) {
    a.offsets[e] = offset;
    if (e == a.n_experts - 1) a.offsets[a.n_experts] = offset + count;
    if (count > 0) {
      a.ptrs.a1[group] = a.w_gate_up + static_cast<int64_t>(e) * 2 * a.inter * a.dim;
      a.ptrs.b1[group] = a.xp + static_cast<int64_t>(offset) * a.dim;
      a.ptrs.c1[group] = a.h + static_cast<int64_t>(offset) * 2 * a.inter;
      a.ptrs.a2[group] = a.w_down + static_cast<int64_t>(e) * a.dim * a.inter;
      a.ptrs.b2[group] = a.act + static_cast<int64_t>(offset) * a.inter;
      a.ptrs.c2[group] = a.xp + static_cast<int64_t>(offset) * a.dim;
    }
  }
  if (count == 0) return;  // uniform over the block
  int rank = 0;            // pairs of e seen in earlier tiles
  constexpr int64_t kTile = static_cast<int64_t>(kPlaceThreads) * kPairsPerThread;
  for (int64_t base = 0; base < a.n_pairs && rank < count; base += kTile) {
    const int64_t first = base + static_cast<int64_t>(threadIdx.x) * kPairsPerThread;
    int mine = 0;
    for (int i = 0; i < kPairsPerThread; ++i) mine += first + i < a.n_pairs && a.ids[first + i] == e;
    int tile_total = 0;
    int r = rank + block_exclusive_scan(mine, scratch, &tile_total);
    for (int i = 0; i < kPairsPerThread && mine > 0; ++i) {
      const int64_t pr = first + i;
      if (pr < a.n_pairs && a.ids[pr] == e) {
        const int row = offset + r++;
        a.row_of_pair[pr] = row;
        a.token_of_row[row] = static_cast<int32_t>(pr / a.top_k);
        --mine;
      }
    }
    rank += tile_total;
  }
}

// One block per row: xp[row] = x[token_of_row[row]], 16-byte vectors when rows allow them.
__global__ void gather_kernel(const uint16_t* x, const int32_t* token_of_row, uint16_t* xp, int64_t dim, bool vec) {
  const int64_t row = blockIdx.x;
  const uint16_t* src = x + static_cast<int64_t>(token_of_row[row]) * dim;
  uint16_t* dst = xp + row * dim;
  if (vec) {
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x)
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
  }
}

__device__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

__device__ uint16_t f32_to_bf16_bits(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// act[r, j] = bf16(silu(h[r, j]) * h[r, inter + j]); 8 elements per thread when inter allows.
__global__ void swiglu_kernel(const uint16_t* h, uint16_t* act, int64_t rows, int64_t inter, bool vec) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (vec) {
    const int64_t per_row = inter / 8;
    for (int64_t i = first; i < rows * per_row; i += step) {
      const int64_t r = i / per_row, c = i % per_row;
      const uint4 g4 = reinterpret_cast<const uint4*>(h + r * 2 * inter)[c];
      const uint4 u4 = reinterpret_cast<const uint4*>(h + r * 2 * inter + inter)[c];
      const uint16_t* g = reinterpret_cast<const uint16_t*>(&g4);
      const uint16_t* u = reinterpret_cast<const uint16_t*>(&u4);
      uint4 o4;
      uint16_t* o = reinterpret_cast<uint16_t*>(&o4);
#pragma unroll
      for (int k = 0; k < 8; ++k) o[k] = f32_to_bf16_bits(silu_mul(bf16_bits_to_f32(g[k]), bf16_bits_to_f32(u[k])));
      reinterpret_cast<uint4*>(act + r * inter)[c] = o4;
    }
  } else {
    for (int64_t i = first; i < rows * inter; i += step) {
      const int64_t r = i / inter, j = i % inter;
      act[i] = f32_to_bf16_bits(silu_mul(bf16_bits_to_f32(h[r * 2 * inter + j]), bf16_bits_to_f32(h[r * 2 * inter + inter + j])));
    }
  }
}

// One block per token: its top_k expert rows, weighted, summed in f32 in slot order; each thread
// takes 8 consecutive outputs (16-byte loads) when rows allow it, one otherwise.
template <typename Out>
__global__ void combine_kernel(const uint16_t* y, const int32_t* row_of_pair, const float* weights, Out* out,
                               int64_t dim, int top_k, bool vec) {
  const int64_t t = blockIdx.x;
  const int64_t width = vec ? 8 : 1;
  for (int64_t o = threadIdx.x * width; o < dim; o += blockDim.x * width) {
    float acc[8] = {};
    for (int s = 0; s < top_k; ++s) {
      const float w = weights[t * top_k + s];
      const int64_t row = row_of_pair ? row_of_pair[t * top_k + s] : t * top_k + s;  // null: pair order
      const uint16_t* src = y + row * dim + o;
      if (vec) {
        const uint4 v = *reinterpret_cast<const uint4*>(src);
        const uint16_t* h = reinterpret_cast<const uint16_t*>(&v);
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[k] = fmaf(w, bf16_bits_to_f32(h[k]), acc[k]);
      } else {
        acc[0] = fmaf(w, bf16_bits_to_f32(src[0]), acc[0]);
      }
    }
    for (int k = 0; k < width; ++k) {
      if constexpr (sizeof(Out) == 4)
        out[t * dim + o + k] = acc[k];
      else
        out[t * dim + o + k] = f32_to_bf16_bits(acc[k]);
    }
  }
}

// ---- MoeGemm::Gemv: few pairs, each one reads its expert's weights once, no host sync ----
// One warp per output row (gate and up rows together in the first pass), lanes striding the
// reduction in 16-byte vectors of 8 bf16, f32 accumulation, a butterfly sum; the vector the rows
// multiply sits in shared memory. Roundings as the GEMM path's: gate and up to bf16 before the
// SwiGLU, its product to bf16, each down output to bf16.
constexpr int kGemvWarps = 8;
constexpr int kGemvRowsPerWarp = 2;

__device__ float dot_bf16_row(const uint16_t* w, const uint16_t* v, int64_t n, int lane) {
  float acc = 0.0f;
  for (int64_t i = lane; i < n / 8; i += 32) {
    const uint4 a4 = reinterpret_cast<const uint4*>(w)[i];
    const uint4 b4 = reinterpret_cast<const uint4*>(v)[i];
    const uint16_t* a = reinterpret_cast<const uint16_t*>(&a4);
    const uint16_t* b = reinterpret_cast<const uint16_t*>(&b4);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc = fmaf(bf16_bits_to_f32(a[k]), bf16_bits_to_f32(b[k]), acc);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// grid (row blocks, pairs): act[p, r] = bf16(silu(bf16(g_r . x)) * bf16(u_r . x)), x = x[p / top_k].
// An id outside [0, n_experts) makes the pair's row NaN (the caller vouches for its ids: Gemv).
__global__ void gemv_gate_up_kernel(const uint16_t* x, const int32_t* ids, const uint16_t* w_gate_up,
                                    uint16_t* act, int64_t dim, int64_t inter, int top_k, int n_experts) {
  extern __shared__ uint4 xs4[];  // [dim / 8]
  const int64_t pair = blockIdx.y;
  const uint4* src = reinterpret_cast<const uint4*>(x + (pair / top_k) * dim);
  for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) xs4[i] = src[i];
  __syncthreads();
  const int e = ids[pair];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint16_t* xs = reinterpret_cast<const uint16_t*>(xs4);
  for (int j = 0; j < kGemvRowsPerWarp; ++j) {
    const int64_t r = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp) * kGemvRowsPerWarp + j;
    if (r >= inter) return;
    if (e < 0 || e >= n_experts) {
      if (lane == 0) act[pair * inter + r] = 0x7fc0;  // NaN
      continue;
    }
    const uint16_t* we = w_gate_up + static_cast<int64_t>(e) * 2 * inter * dim;
    const float g = bf16_bits_to_f32(f32_to_bf16_bits(dot_bf16_row(we + r * dim, xs, dim, lane)));
    const float u = bf16_bits_to_f32(f32_to_bf16_bits(dot_bf16_row(we + (inter + r) * dim, xs, dim, lane)));
    if (lane == 0) act[pair * inter + r] = f32_to_bf16_bits(silu_mul(g, u));
  }
}

// grid (row blocks, pairs): y[p, r] = bf16(d_r . act[p]) with d = W_down[ids[p]].
__global__ void gemv_down_kernel(const uint16_t* act, const int32_t* ids, const uint16_t* w_down, uint16_t* y,
                                 int64_t dim, int64_t inter, int n_experts) {
  extern __shared__ uint4 as4[];  // [inter / 8]
  const int64_t pair = blockIdx.y;
  const uint4* src = reinterpret_cast<const uint4*>(act + pair * inter);
  for (int64_t i = threadIdx.x; i < inter / 8; i += blockDim.x) as4[i] = src[i];
  __syncthreads();
  const int e = ids[pair];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint16_t* as = reinterpret_cast<const uint16_t*>(as4);
  for (int j = 0; j < kGemvRowsPerWarp; ++j) {
    const int64_t r = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp) * kGemvRowsPerWarp + j;
    if (r >= dim) return;
    if (e < 0 || e >= n_experts) {
      if (lane == 0) y[pair * dim + r] = 0x7fc0;
      continue;
    }
    const float v = dot_bf16_row(w_down + (static_cast<int64_t>(e) * dim + r) * inter, as, inter, lane);
    if (lane == 0) y[pair * dim + r] = f32_to_bf16_bits(v);
  }
}

void moe_experts_gemv(const MoeExpertsParams& p, uint16_t* act, uint16_t* y) {
  IC_CHECK(p.dim % 8 == 0 && p.inter % 8 == 0, "moe_experts (gemv): dim {} and inter {} must be multiples of 8",
           p.dim, p.inter);
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  IC_CHECK(aligned(p.x) && aligned(p.w_gate_up) && aligned(p.w_down),
           "moe_experts (gemv): x and the expert weights must be 16-byte aligned");
  const int64_t n_pairs = p.n_tok * p.top_k;
  IC_CHECK(n_pairs <= 65535, "moe_experts (gemv): {} pairs exceed the grid's 65535", n_pairs);
  constexpr int64_t rows_per_block = kGemvWarps * kGemvRowsPerWarp;
  const dim3 block(kGemvWarps * 32);
  const dim3 g1(static_cast<unsigned>((p.inter + rows_per_block - 1) / rows_per_block), static_cast<unsigned>(n_pairs));
  gemv_gate_up_kernel<<<g1, block, static_cast<size_t>(p.dim) * 2>>>(p.x, p.ids, p.w_gate_up, act, p.dim, p.inter,
                                                                     static_cast<int>(p.top_k),
                                                                     static_cast<int>(p.n_experts));
  IC_CUDA_CHECK_LAUNCH();
  const dim3 g2(static_cast<unsigned>((p.dim + rows_per_block - 1) / rows_per_block), static_cast<unsigned>(n_pairs));
  gemv_down_kernel<<<g2, block, static_cast<size_t>(p.inter) * 2>>>(act, p.ids, p.w_down, y, p.dim, p.inter,
                                                                   static_cast<int>(p.n_experts));
  IC_CUDA_CHECK_LAUNCH();
  const unsigned tok = static_cast<unsigned>(p.n_tok);
  const int top_k = static_cast<int>(p.top_k);
  if (p.out_type == DType::F32)
    combine_kernel<<<tok, 256>>>(y, nullptr, p.weights, static_cast<float*>(p.out), p.dim, top_k, true);
  else
    combine_kernel<<<tok, 256>>>(y, nullptr, p.weights, static_cast<uint16_t*>(p.out), p.dim, top_k, true);
  IC_CUDA_CHECK_LAUNCH();
}

// The per-group arguments of one projection, built on the host from the counts.
struct GroupArgs {
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> m, n, k, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  void add(int m_, int n_, int k_) {
    ta.push_back(CUBLAS_OP_T);
    tb.push_back(CUBLAS_OP_N);
    m.push_back(m_);
    n.push_back(n_);
    k.push_back(k_);
    lda.push_back(k_);
    ldb.push_back(k_);
    ldc.push_back(m_);
    size.push_back(1);
    alpha.push_back(1.0f);
    beta.push_back(0.0f);
  }
};

// C_g [rows_g, out] = B_g [rows_g, in] @ A_g^T for every group g (row-major; column-major for
// cuBLAS, as in ops/linear_cuda.cu: C^T = op(A) B^T with A read transposed).
void grouped_gemm(cublasHandle_t blas, const GroupArgs& g, const void** a, const void** b, void** c, MoeGemm mode,
                  const std::vector<const void*>& a_host, const std::vector<const void*>& b_host,
                  const std::vector<void*>& c_host) {
  const int groups = static_cast<int>(g.m.size());
  if (groups == 0) return;
  if (mode != MoeGemm::PerExpert) {
    const cublasStatus_t st = cublasGemmGroupedBatchedEx(
        blas, g.ta.data(), g.tb.data(), g.m.data(), g.n.data(), g.k.data(), g.alpha.data(), a, CUDA_R_16BF,
        g.lda.data(), b, CUDA_R_16BF, g.ldb.data(), g.beta.data(), c, CUDA_R_16BF, g.ldc.data(), groups,
        g.size.data(), CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_SUCCESS) return;
    // cuBLAS may refuse the grouped form for shapes its kernels do not take (rows that are not
    // 16-byte multiples, say); the per-expert loop below computes the same products then.
    IC_CHECK(st == CUBLAS_STATUS_NOT_SUPPORTED, "cuBLAS error {} in cublasGemmGroupedBatchedEx ({} groups)",
             cublasGetStatusString(st), groups);
  }
  for (int i = 0; i < groups; ++i)
    IC_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, g.m[i], g.n[i], g.k[i], &g.alpha[i], a_host[i],
                                 CUDA_R_16BF, g.lda[i], b_host[i], CUDA_R_16BF, g.ldb[i], &g.beta[i], c_host[i],
                                 CUDA_R_16BF, g.ldc[i], CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void moe_experts(const MoeExpertsParams& p) {
  if (p.n_tok == 0) return;
  const int64_t n_pairs = p.n_tok * p.top_k;
  IC_CHECK(n_pairs <= INT_MAX && p.dim <= INT_MAX && 2 * p.inter <= INT_MAX,
           "moe_experts: {} pairs of dim {} / inter {} exceed the CUDA path's 32-bit sizes", n_pairs, p.dim, p.inter);
  IC_CHECK(p.n_experts <= kMaxExperts, "moe_experts: {} experts exceed the CUDA path's {}", p.n_experts, kMaxExperts);
  const MoeWorkspaceLayout l = moe_workspace_layout(p.n_tok, p.top_k, p.dim, p.inter, p.n_experts);
  Tensor own;
  char* ws = static_cast<char*>(p.workspace);
  if (!ws) {
    own = Tensor::empty({(l.total + 3) / 4}, DType::I32, Device::CUDA);
    ws = static_cast<char*>(own.raw());
  }
  auto at = [&](int64_t off) { return static_cast<void*>(ws + off); };
  int32_t* counts = static_cast<int32_t*>(at(l.counts));
  void** ptr_base = static_cast<void**>(at(l.ptrs));
  const int64_t E = p.n_experts;
  const Ptrs ptrs{const_cast<const void**>(ptr_base),         const_cast<const void**>(ptr_base + E),
                  ptr_base + 2 * E,                           const_cast<const void**>(ptr_base + 3 * E),
                  const_cast<const void**>(ptr_base + 4 * E), ptr_base + 5 * E};
  uint16_t* xp = static_cast<uint16_t*>(at(l.xp));
  uint16_t* h = static_cast<uint16_t*>(at(l.h));
  uint16_t* act = static_cast<uint16_t*>(at(l.act));
  if (p.gemm == MoeGemm::Gemv) return moe_experts_gemv(p, act, xp);  // pairs in pair order, no sync
  int32_t* row_of_pair = static_cast<int32_t*>(at(l.row_of_pair));
  int32_t* token_of_row = static_cast<int32_t*>(at(l.token_of_row));

  // 1-2: count and place.
  IC_CUDA_CHECK(cudaMemsetAsync(counts, 0, (E + 1) * sizeof(int32_t), nullptr));
  const unsigned count_blocks = static_cast<unsigned>(std::min<int64_t>((n_pairs + 1023) / 1024, 264));
  count_kernel<<<count_blocks, 1024, (E + 1) * sizeof(int32_t)>>>(p.ids, n_pairs, static_cast<int>(E), counts);
  IC_CUDA_CHECK_LAUNCH();
  const PlaceArgs pa{p.ids, counts, static_cast<int32_t*>(at(l.offsets)), row_of_pair, token_of_row, ptrs,
                     p.w_gate_up, p.w_down, xp, h, act, n_pairs, p.dim, p.inter, static_cast<int>(p.top_k),
                     static_cast<int>(E)};
  place_kernel<<<static_cast<unsigned>(E), kPlaceThreads>>>(pa);
  IC_CUDA_CHECK_LAUNCH();

  // 3: the group sizes reach the host (waits for the two kernels above).
  std::vector<int32_t> host_counts(E + 1);
  IC_CUDA_CHECK(cudaMemcpy(host_counts.data(), counts, (E + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost));
  IC_CHECK(host_counts[E] == 0, "moe_experts: {} of the {} expert ids are outside [0, {})", host_counts[E], n_pairs,
           E);
  GroupArgs g1, g2;
  std::vector<const void*> a1, b1, a2, b2;  // host copies of the pointers, for the per-expert mode
  std::vector<void*> c1, c2;
  int64_t offset = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int rows = host_counts[e];
    if (rows == 0) continue;
    g1.add(static_cast<int>(2 * p.inter), rows, static_cast<int>(p.dim));
    g2.add(static_cast<int>(p.dim), rows, static_cast<int>(p.inter));
    a1.push_back(p.w_gate_up + e * 2 * p.inter * p.dim);
    b1.push_back(xp + offset * p.dim);
    c1.push_back(h + offset * 2 * p.inter);
    a2.push_back(p.w_down + e * p.dim * p.inter);
    b2.push_back(act + offset * p.inter);
    c2.push_back(xp + offset * p.dim);
    offset += rows;
  }

  // Auto: the grouped call for few rows per expert, the loop for many (moe_experts.h says why).
  MoeGemm mode = p.gemm;
  if (mode == MoeGemm::Auto)
    mode = !g1.m.empty() && offset >= kMoePerExpertRows * static_cast<int64_t>(g1.m.size()) ? MoeGemm::PerExpert
                                                                                           : MoeGemm::Grouped;

  // 4-8.
  const bool gather_vec = p.dim % 8 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  gather_kernel<<<static_cast<unsigned>(n_pairs), 128>>>(p.x, token_of_row, xp, p.dim, gather_vec);
  IC_CUDA_CHECK_LAUNCH();
  cublasHandle_t blas = blas_for_current_device();
  grouped_gemm(blas, g1, ptrs.a1, ptrs.b1, ptrs.c1, mode, a1, b1, c1);
  const bool swiglu_vec = p.inter % 8 == 0;  // the workspace rows are then 16-byte aligned
  const int64_t swiglu_work = n_pairs * (swiglu_vec ? p.inter / 8 : p.inter);
  const unsigned swiglu_blocks = static_cast<unsigned>(std::min<int64_t>((swiglu_work + 255) / 256, 132 * 16));
  swiglu_kernel<<<swiglu_blocks, 256>>>(h, act, n_pairs, p.inter, swiglu_vec);
  IC_CUDA_CHECK_LAUNCH();
  grouped_gemm(blas, g2, ptrs.a2, ptrs.b2, ptrs.c2, mode, a2, b2, c2);
  const unsigned tok = static_cast<unsigned>(p.n_tok);
  const int top_k = static_cast<int>(p.top_k);
  const bool combine_vec = p.dim % 8 == 0;  // the workspace rows are then 16-byte aligned
  if (p.out_type == DType::F32)
    combine_kernel<<<tok, 256>>>(xp, row_of_pair, p.weights, static_cast<float*>(p.out), p.dim, top_k, combine_vec);
  else
    combine_kernel<<<tok, 256>>>(xp, row_of_pair, p.weights, static_cast<uint16_t*>(p.out), p.dim, top_k,
                                 combine_vec);
  IC_CUDA_CHECK_LAUNCH();
  // A workspace allocated here is freed at return; cudaFree waits for the kernels that use it.
}

}  // namespace ic::ops::cuda
