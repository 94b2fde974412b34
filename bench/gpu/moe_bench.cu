// Workbench of the routed-expert block (ops::moe_route + ops::moe_experts) at the paper's 30B
// shape (GLM-4.7-Flash: hidden 2048, 64 routed experts, top-4, moe_intermediate_size 1536).
//
//   moe_bench [TOKENS...]   default 1 64 4096 16384
//
// Counts, per (token, slot) pair: FLOPs = 6 dim inter (gate and up: 2 * 2 dim inter; down:
// 2 dim inter). Fewest bytes: the weights of every expert some token picks (3 dim inter bf16
// each) plus x (bf16) and out (bf16, the fast path's residual stream). The permuted intermediates
// the op writes and reads again (gathered x, gate|up, the SwiGLU product, the down outputs) are
// reported beside as the op's own traffic.
//
// Printed for each size: the router, the experts (grouped GEMM and the per-expert GEMM loop),
// and in the same run the ceilings: one dense cuBLAS bf16 GEMM of the same FLOPs
// ([pairs, 2048] x [2048, 4608]), the weight bytes at the measured copy bandwidth, and the cost
// of the one host sync the op makes (device-to-host copy of the expert counts). First, a check of
// the op at 64 tokens against the plain CPU reference on sampled tokens.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "ops/gemm_bf16.h"
#include "ops/moe_experts.h"
#include "ops/moe_route.h"

namespace {

using namespace ic;
using namespace ic::ops;

constexpr int64_t kDim = 2048, kInter = 1536, kExperts = 64, kTopK = 4;

__host__ __device__ uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Roughly normal (a sum of four uniforms at unit variance) times sd, rounded to bf16.
__global__ void fill_bf16(uint16_t* p, uint64_t n, uint32_t seed, float sd) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (uint32_t j = 0; j < 4; ++j)
      s += hash32(seed ^ hash32(static_cast<uint32_t>(i * 4 + j) ^ static_cast<uint32_t>(i >> 30))) * (1.0f / 4294967296.0f);
    uint32_t u = __float_as_uint((s - 2.0f) * 1.7320508f * sd);
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = static_cast<uint16_t>(u >> 16);
  }
}

__global__ void nop_kernel(int* p) {
  if (p && threadIdx.x == 0) *p = 0;
}

template <typename T>
T* dalloc(int64_t n) {
  void* p = nullptr;
  IC_CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T)));
  return static_cast<T*>(p);
}

void fill(uint16_t* p, int64_t n, uint32_t seed, float sd) {
  fill_bf16<<<1024, 256>>>(p, static_cast<uint64_t>(n), seed, sd);
  IC_CUDA_CHECK_LAUNCH();
}

// Median time in ms of f() over reps, after warm-ups, by CUDA events on the default stream.
template <typename F>
double time_ms(F f, int reps, int warm = 3) {
  for (int i = 0; i < warm; ++i) f();
  cudaEvent_t a, b;
  IC_CUDA_CHECK(cudaEventCreate(&a));
  IC_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    IC_CUDA_CHECK(cudaEventRecord(a));
    f();
    IC_CUDA_CHECK(cudaEventRecord(b));
    IC_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    IC_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  IC_CUDA_CHECK(cudaEventDestroy(a));
  IC_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double copy_gbps() {
  const int64_t bytes = int64_t(2) << 30;
  char* a = dalloc<char>(bytes);
  char* b = dalloc<char>(bytes);
  IC_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms = time_ms([&] { IC_CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
}

double gemm_ceiling_tflops() {
  const int64_t n = 8192;
  uint16_t* a = dalloc<uint16_t>(n * n);
  uint16_t* b = dalloc<uint16_t>(n * n);
  uint16_t* c = dalloc<uint16_t>(n * n);
  fill(a, n * n, 1, 1.0f);
  fill(b, n * n, 2, 1.0f);
  const double ms = time_ms([&] { cuda::gemm_bf16({a, b, c, n, n, n, DType::BF16}); }, 10);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

// The host sync the op makes: a device-to-host copy of the n_experts + 1 counts after a kernel,
// measured by wall clock (it is a host-side wait), minus the kernel launch alone.
double sync_us() {
  int* d = dalloc<int>(kExperts + 1);
  std::vector<int> h(kExperts + 1);
  auto wall = [&](bool copy) {
    for (int i = 0; i < 20; ++i) nop_kernel<<<1, 32>>>(d);
    IC_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    const int reps = 2000;
    for (int i = 0; i < reps; ++i) {
      nop_kernel<<<1, 32>>>(d);
      if (copy) IC_CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(int), cudaMemcpyDeviceToHost));
    }
    IC_CUDA_CHECK(cudaDeviceSynchronize());
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  const double with = wall(true), without = wall(false);
  cudaFree(d);
  return with - without;
}

struct Block {  // the 30B shape's routed experts and router, random, on the GPU
  uint16_t* w_gate_up = dalloc<uint16_t>(kExperts * 2 * kInter * kDim);
  uint16_t* w_down = dalloc<uint16_t>(kExperts * kDim * kInter);
  uint16_t* w_router = dalloc<uint16_t>(kExperts * kDim);
  float* bias = dalloc<float>(kExperts);
  Block() {
    fill(w_gate_up, kExperts * 2 * kInter * kDim, 11, 1.0f / std::sqrt(float(kDim)));
    fill(w_down, kExperts * kDim * kInter, 12, 1.0f / std::sqrt(float(kInter)));
    fill(w_router, kExperts * kDim, 13, 1.0f / std::sqrt(float(kDim)));
    std::vector<float> b(kExperts);
    for (int64_t e = 0; e < kExperts; ++e) b[e] = 0.01f * static_cast<float>(hash32(uint32_t(e)) % 100) / 100.0f;
    IC_CUDA_CHECK(cudaMemcpy(bias, b.data(), kExperts * 4, cudaMemcpyHostToDevice));
  }
};

struct Tokens {
  int64_t n;
  uint16_t* x;
  int32_t* ids;
  float* weights;
  float* logits;
  uint16_t* out;
  void* ws;
  Tokens(int64_t n_tok, uint32_t seed)
      : n(n_tok),
        x(dalloc<uint16_t>(n_tok * kDim)),
        ids(dalloc<int32_t>(n_tok * kTopK)),
        weights(dalloc<float>(n_tok * kTopK)),
        logits(dalloc<float>(n_tok * kExperts)),
        out(dalloc<uint16_t>(n_tok * kDim)),
        ws(dalloc<char>(moe_experts_workspace_bytes(n_tok, kTopK, kDim, kInter, kExperts))) {
    fill(x, n_tok * kDim, seed, 1.0f);
  }
  ~Tokens() {
    for (void* p : {static_cast<void*>(x), static_cast<void*>(ids), static_cast<void*>(weights),
                    static_cast<void*>(logits), static_cast<void*>(out), ws})
      cudaFree(p);
  }
};

MoeRouterConfig glm_router() {
  MoeRouterConfig c;  // GLM-4.7-Flash: n_group 1, topk_group 1, norm_topk_prob, scale 1.8
  c.top_k = kTopK;
  c.routed_scaling_factor = 1.8f;
  return c;
}

void route(const Block& b, Tokens& t) {
  cuda::moe_route({t.x, b.w_router, DType::BF16, b.bias, t.logits, t.ids, t.weights, t.n, kDim, kExperts, glm_router()});
}

void experts(const Block& b, Tokens& t, MoeGemm mode) {
  MoeExpertsParams p{t.x, t.ids, t.weights, b.w_gate_up, b.w_down, t.out, DType::BF16, t.n, kTopK, kDim, kInter, kExperts};
  p.workspace = t.ws;
  p.gemm = mode;
  cuda::moe_experts(p);
}

std::vector<uint16_t> to_host(const uint16_t* d, int64_t n) {
  std::vector<uint16_t> h(n);
  IC_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  return h;
}

// The op at 64 tokens against the CPU reference on 4 sampled tokens (bf16 out): normwise
// relative error, allowed 4 u_bf16 (four roundings of 2^-8 on the GPU's path; tests/test_moe.cpp).
bool check(const Block& b) {
  Tokens t(64, 99);
  route(b, t);
  experts(b, t, MoeGemm::Grouped);
  IC_CUDA_CHECK(cudaDeviceSynchronize());
  const auto x = to_host(t.x, t.n * kDim), out = to_host(t.out, t.n * kDim);
  const auto gu = to_host(b.w_gate_up, kExperts * 2 * kInter * kDim), dn = to_host(b.w_down, kExperts * kDim * kInter);
  std::vector<int32_t> ids(t.n * kTopK);
  std::vector<float> wts(t.n * kTopK);
  IC_CUDA_CHECK(cudaMemcpy(ids.data(), t.ids, ids.size() * 4, cudaMemcpyDeviceToHost));
  IC_CUDA_CHECK(cudaMemcpy(wts.data(), t.weights, wts.size() * 4, cudaMemcpyDeviceToHost));
  double err2 = 0, ref2 = 0;
  for (int64_t tok : {0, 17, 42, 63}) {
    std::vector<float> ref(kDim);
    cpu::moe_experts_reference({x.data() + tok * kDim, ids.data() + tok * kTopK, wts.data() + tok * kTopK, gu.data(),
                                dn.data(), ref.data(), DType::F32, 1, kTopK, kDim, kInter, kExperts});
    for (int64_t o = 0; o < kDim; ++o) {
      const double d = bf16_to_f32(out[tok * kDim + o]) - ref[o];
      err2 += d * d, ref2 += double(ref[o]) * ref[o];
    }
  }
  const double rel = std::sqrt(err2 / ref2), allowed = 4.0 / 256;
  std::printf("check: 64 tokens, 4 sampled against the CPU reference: normwise relative error %.2e (allowed %.2e) %s\n",
              rel, allowed, rel <= allowed ? "ok" : "FAIL");
  return rel <= allowed;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<int64_t> sizes = {1, 64, 4096, 16384};
    if (argc > 1) {
      sizes.clear();
      for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
    }
    cudaDeviceProp prop{};
    IC_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const double tflops = gemm_ceiling_tflops(), gbps = copy_gbps(), sync = sync_us();
    std::printf("device: %s, %d SMs | ceilings: bf16 GEMM 8192^3 %.0f TFLOP/s, D2D copy %.0f GB/s | host sync "
                "(counts D2H after a kernel) %.1f us\n",
                prop.name, prop.multiProcessorCount, tflops, gbps, sync);
    std::printf("shape: hidden %ld, %ld experts top-%ld, moe_intermediate %ld; bf16 weights %.2f GB\n", long(kDim),
                long(kExperts), long(kTopK), long(kInter), 3.0 * kExperts * kDim * kInter * 2 / 1e9);
    Block b;
    const bool ok = check(b);
    std::printf("| tokens | experts hit | GFLOP | min MB | router us | grouped us | TFLOP/s | GB/s | per-expert loop us | "
                "gemv us (GB/s) | dense GEMM same FLOPs us | weight-read floor us |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int64_t n : sizes) {
      Tokens t(n, 7);
      route(b, t);
      IC_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<int32_t> ids(n * kTopK);
      IC_CUDA_CHECK(cudaMemcpy(ids.data(), t.ids, ids.size() * 4, cudaMemcpyDeviceToHost));
      const int64_t hit = static_cast<int64_t>(std::set<int32_t>(ids.begin(), ids.end()).size());
      const int64_t pairs = n * kTopK;
      const double flops = 6.0 * kDim * kInter * pairs;
      const double bytes = hit * 3.0 * kDim * kInter * 2 + n * kDim * 2.0 * 2;
      const int reps = n >= 4096 ? 20 : 100;
      const double ms_route = time_ms([&] { route(b, t); }, reps);
      const double ms_grouped = time_ms([&] { experts(b, t, MoeGemm::Grouped); }, reps);
      const double ms_loop = time_ms([&] { experts(b, t, MoeGemm::PerExpert); }, reps);
      // The matrix-vector mode where the family's forward takes it (pairs <= kMoeGemvPairs).
      const double ms_gemv = pairs <= kMoeGemvPairs ? time_ms([&] { experts(b, t, MoeGemm::Gemv); }, reps) : 0.0;
      // The dense ceiling: [pairs, dim] x [dim, 3 inter] in one GEMM.
      uint16_t* dense_out = dalloc<uint16_t>(pairs * 3 * kInter);
      uint16_t* dense_x = dalloc<uint16_t>(pairs * kDim);
      fill(dense_x, pairs * kDim, 5, 1.0f);
      const double ms_dense =
          time_ms([&] { cuda::gemm_bf16({dense_x, b.w_gate_up, dense_out, pairs, 3 * kInter, kDim, DType::BF16}); }, reps);
      cudaFree(dense_out);
      cudaFree(dense_x);
      char gemv[48] = "-";
      if (ms_gemv > 0) std::snprintf(gemv, sizeof gemv, "%.1f (%.0f)", ms_gemv * 1e3, bytes / (ms_gemv * 1e-3) / 1e9);
      std::printf("| %ld | %ld | %.2f | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %s | %.1f | %.1f |\n", long(n),
                  long(hit), flops / 1e9, bytes / 1e6, ms_route * 1e3, ms_grouped * 1e3,
                  flops / (ms_grouped * 1e-3) / 1e12, bytes / (ms_grouped * 1e-3) / 1e9, ms_loop * 1e3, gemv,
                  ms_dense * 1e3, bytes / (gbps * 1e9) * 1e6);
      std::fflush(stdout);
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_bench: %s\n", e.what());
    return 1;
  }
}
