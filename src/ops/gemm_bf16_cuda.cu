// bf16 GEMM through cuBLASLt: y [n, out] = x [n, in] @ W^T, f32 accumulation (CUBLAS_COMPUTE_32F).
// cuBLASLt is column-major: row-major y [n, out] is column-major y^T [out, n] = op(W) @ x^T, where
// row-major W [out, in] reads as the column-major in x out matrix W^T (so TRANSA = T) and
// row-major x [n, in] as the column-major in x n matrix x^T (TRANSB = N).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/cublas_check.h"
#include "core/cuda_check.h"
#include "core/cuda_memory.h"
#include "ops/gemm_bf16.h"

namespace ic::ops::cuda {

namespace {

// cuBLASLt needs a workspace for its faster kernels (split-K reductions, stream-K); 32 MiB is what
// NVIDIA recommends for Hopper.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// Largest power of two (up to 256) that divides the address: cuBLASLt's heuristic otherwise
// assumes 256-byte alignment, and a row slice of a tensor can be less aligned than that.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// One matmul description per shape, kept with its chosen algorithm: the heuristic query costs
// more host time than a small GEMM, and one fixed algorithm per shape keeps results bitwise
// reproducible run to run.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  // No cuBLASLt algorithm for these alignments (a row slice can leave x 2-byte aligned): the
  // classic cublasGemmEx, which takes any alignment, computes it instead (same types and f32 sums).
  bool classic = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t, int64_t, int64_t,
                           int64_t, int64_t>;

void set_batch(cublasLtMatrixLayout_t l, int64_t batch, int64_t stride) {
  const int32_t b = static_cast<int32_t>(batch);
  IC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b));
  IC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

// A cuBLASLt handle, its workspace and the plans, per host thread and device: a handle costs
// milliseconds to create and must not be used by two threads at once, and the op's signature
// carries no context (as in ops/linear_cuda.cu). When the engine gains execution contexts, this
// becomes one of their members.
class LtContext {
 public:
  explicit LtContext(int device) : device_(device) {
    IC_CUBLAS_CHECK(cublasLtCreate(&handle_));
    workspace_ = ic::cuda::alloc(static_cast<int64_t>(kWorkspaceBytes));
  }
  ~LtContext() {
    plans_.clear();
    ic::cuda::free(workspace_);
    if (classic_) cublasDestroy(classic_);
    cublasLtDestroy(handle_);
  }
  LtContext(const LtContext&) = delete;
  LtContext& operator=(const LtContext&) = delete;
  int device() const { return device_; }
  cublasLtHandle_t handle() const { return handle_; }
  void* workspace() const { return workspace_; }
  const Plan& plan(const GemmBf16Params& p);
  cublasHandle_t classic() {
    if (!classic_) {
      IC_CUBLAS_CHECK(cublasCreate(&classic_));
      IC_CUBLAS_CHECK(cublasSetStream(classic_, nullptr));  // the legacy default stream, like every op
    }
    return classic_;
  }

 private:
  int device_ = -1;
  cublasLtHandle_t handle_ = nullptr;
  cublasHandle_t classic_ = nullptr;
  void* workspace_ = nullptr;
  std::map<PlanKey, std::unique_ptr<Plan>> plans_;
};

const Plan& LtContext::plan(const GemmBf16Params& p) {
  // Every product of a batch starts at base + b * stride: the alignment is the base's and the stride's.
  const int64_t ysize = p.y_type == DType::F32 ? 4 : 2;
  const auto aligned = [&](const void* base, int64_t stride_bytes) {
    const uint32_t a = alignment_of(base);
    if (p.batch == 1) return a;
    return std::min(a, alignment_of(reinterpret_cast<const void*>(static_cast<uintptr_t>(stride_bytes))));
  };
  const uint32_t al_w = aligned(p.w, p.stride_w * 2), al_x = aligned(p.x, p.stride_x * 2),
                 al_y = aligned(p.y, p.stride_y * ysize);
  const PlanKey key{p.n, p.out, p.in, static_cast<int>(p.y_type), p.accumulate, al_w, al_x, al_y,
                    p.batch, p.stride_x, p.stride_w, p.stride_y};
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;

  auto pl = std::make_unique<Plan>();
  const cudaDataType_t yt = p.y_type == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  IC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&pl->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  IC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  IC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  IC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->a, CUDA_R_16BF, p.in, p.out, p.in));
  IC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->b, CUDA_R_16BF, p.in, p.n, p.in));
  IC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->c, yt, p.out, p.n, p.out));
  if (p.batch > 1) {
    set_batch(pl->a, p.batch, p.stride_w);
    set_batch(pl->b, p.batch, p.stride_x);
    set_batch(pl->c, p.batch, p.stride_y);
  }

  cublasLtMatmulPreference_t pref = nullptr;
  IC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, sizeof al_w);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x, sizeof al_x);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_y, sizeof al_y);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_y, sizeof al_y);
  // Split-K partial sums reduced in f32 (the workspace) only: the in-place and output-type schemes
  // add the parts in y's type, which for a bf16 y rounds every partial sum (seen on the H200 at
  // n 1 x 2048 x 2048: 16 bf16 ulps off the exact sum).
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof reduction);
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, pl->op, pl->a, pl->b, pl->c, pl->c, pref, 1, &heur, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0)
    pl->algo = heur.algo;
  else
    pl->classic = true;
  return *plans_.emplace(key, std::move(pl)).first->second;
}

LtContext& context_for_current_device() {
  thread_local std::unique_ptr<LtContext> ctx;
  int dev = 0;
  IC_CUDA_CHECK(cudaGetDevice(&dev));
  if (!ctx || ctx->device() != dev) {
    ctx.reset();
    ctx = std::make_unique<LtContext>(dev);
  }
  return *ctx;
}

}  // namespace

void gemm_bf16(const GemmBf16Params& p) {
  if (p.n == 0 || p.out == 0) return;
  IC_CHECK(p.n <= INT_MAX && p.out <= INT_MAX && p.in <= INT_MAX && p.batch <= INT_MAX,
           "gemm_bf16: {}x{}x{} exceeds cuBLASLt's 32-bit dimensions", p.n, p.out, p.in);
  IC_CHECK(p.y_type == DType::F32 || p.y_type == DType::BF16, "gemm_bf16: y must be F32 or BF16, got {}",
           dtype_name(p.y_type));
  LtContext& ctx = context_for_current_device();
  const Plan& pl = ctx.plan(p);
  const float alpha = 1.0f, beta = p.accumulate ? 1.0f : 0.0f;
  if (pl.classic) {
    const cudaDataType_t yt = p.y_type == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
    if (p.batch > 1) {
      IC_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          ctx.classic(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.out), static_cast<int>(p.n),
          static_cast<int>(p.in), &alpha, p.w, CUDA_R_16BF, static_cast<int>(p.in), p.stride_w, p.x, CUDA_R_16BF,
          static_cast<int>(p.in), p.stride_x, &beta, p.y, yt, static_cast<int>(p.out), p.stride_y,
          static_cast<int>(p.batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return;
    }
    IC_CUBLAS_CHECK(cublasGemmEx(ctx.classic(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.out), static_cast<int>(p.n),
                                 static_cast<int>(p.in), &alpha, p.w, CUDA_R_16BF, static_cast<int>(p.in), p.x,
                                 CUDA_R_16BF, static_cast<int>(p.in), &beta, p.y, yt, static_cast<int>(p.out),
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  IC_CUBLAS_CHECK(cublasLtMatmul(ctx.handle(), pl.op, &alpha, p.w, pl.a, p.x, pl.b, &beta, p.y, pl.c, p.y, pl.c,
                                 &pl.algo, ctx.workspace(), kWorkspaceBytes, nullptr));
}

}  // namespace ic::ops::cuda
