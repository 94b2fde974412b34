// Workbench of the GPU distillation step (distill_loss_cuda with its gradient, and the teacher
// targets attention_targets on device tensors): measures the f32 GEMM ceiling (cuBLAS, no TF32),
// times each case, checks the smallest one against the CPU f32 path, and prints TFLOP/s.
//
//   distill_loss_bench            all cases
//   distill_loss_bench quick      n = 2048 only
//
// FLOP count of one loss + backward call, n tokens, H heads of dim d, model width D, row blocks
// of R rows (block b covers rows [t0, t0 + r_b) and the columns s < t0 + r_b):
//   projections     2 n D (H d + d + H)
//   scores a        sum_b 2 r_b H d (t0 + r_b)      (= 2 H d n (n + R) / 2 when R divides n)
//   dq = b k        the same
//   dk += b^T q     the same
//   weight grads    2 n D (H d + d + H)
//   (the row kernel's ~6 H per pair and the per-token kernels are left out: memory bound)
// so FLOPs = 6 H d sum_b r_b (t0 + r_b) + 4 n D (H d + d + H). Score traffic: the row kernel
// reads and writes the [R H, n] block once (8 H bytes per pair), the two backward GEMMs read it.
// Teacher: 2 Hq hd sum_b r_b (t0 + r_b) FLOPs, n^2 4 bytes of p written.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/cublas_check.h"
#include "core/cuda_check.h"
#include "core/cuda_memory.h"
#include "indexcache/distill_loss.h"
#include "indexcache/teacher.h"

namespace {

using namespace ic;

Tensor random_host(const Shape& s, uint32_t seed, float sd) {
  Tensor t = Tensor::empty(s, DType::F32);
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(gen);
  return t;
}

double sgemm_ceiling() {
  const int N = 8192;
  Tensor a = Tensor::zeros({N, N}, DType::F32, Device::CUDA), b = Tensor::zeros({N, N}, DType::F32, Device::CUDA),
         c = Tensor::empty({N, N}, DType::F32, Device::CUDA);
  cublasHandle_t h;
  IC_CUBLAS_CHECK(cublasCreate(&h));
  const float one = 1.0f, zero = 0.0f;
  const auto run = [&] {
    IC_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, N, N, N, &one, a.raw(), CUDA_R_32F, N, b.raw(),
                                 CUDA_R_32F, N, &zero, c.raw(), CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  run();
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) run();
  cuda::synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 5;
  cublasDestroy(h);
  return 2.0 * N * N * N / s / 1e12;
}

struct Case {
  int64_t n, D, H, d, Hq, hd;
};

// The rows per block distill_loss_cuda picks (its 1 GiB rule), for the FLOP count.
int64_t rows_per_block(int64_t n, int64_t H) {
  return std::clamp<int64_t>((int64_t{1} << 30) / (4 * H * n), int64_t{1}, n);
}
double pair_sum(int64_t n, int64_t R) {
  double s = 0.0;
  for (int64_t t0 = 0; t0 < n; t0 += R) {
    const int64_t r = std::min(R, n - t0);
    s += static_cast<double>(r) * (t0 + r);
  }
  return s;
}

void run_case(const Case& c, double ceiling, bool check) {
  IndexerConfig cfg;
  cfg.n_heads = c.H;
  cfg.head_dim = c.d;
  cfg.rope_dim = std::min<int64_t>(64, c.d);
  cfg.topk = 2048;
  const IndexerWeights w_host = IndexerWeights::random(cfg, c.D, 1);
  const IndexerWeights w = weights_to(w_host, Device::CUDA);
  const Tensor x = random_host({c.n, c.D}, 2, 1.0f).to(Device::CUDA);
  const Tensor q = random_host({c.n, c.Hq, c.hd}, 3, 0.3f).to(Device::CUDA);
  const Tensor k = random_host({c.n, c.Hq / 3, c.hd}, 4, 0.3f).to(Device::CUDA);

  Tensor p = attention_targets(q, k);  // warm-up
  cuda::synchronize();
  auto t0 = std::chrono::steady_clock::now();
  const int reps = 3;
  for (int i = 0; i < reps; ++i) p = attention_targets(q, k);
  cuda::synchronize();
  const double teacher_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;

  IndexerWeights g = weights_to(IndexerWeights::zeros(cfg, c.D), Device::CUDA);
  DistillStats st = distill_loss_cuda(cfg, w, {x, p, Tensor()}, &g);  // warm-up (synchronises)
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) st = distill_loss_cuda(cfg, w, {x, p, Tensor()}, &g);
  const double loss_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;

  const int64_t R = rows_per_block(c.n, c.H), Rt = std::clamp<int64_t>((int64_t{1} << 30) / (4 * c.Hq * c.n), 1, c.n);
  const double proj = 2.0 * c.n * c.D * (c.H * c.d + c.d + c.H);
  const double flops = 6.0 * c.H * c.d * pair_sum(c.n, R) + 2 * proj;
  const double teacher_flops = 2.0 * c.Hq * c.hd * pair_sum(c.n, Rt);
  std::printf("n %5lld D %4lld H %2lld d %3lld | loss+grad %8.2f ms %6.1f TFLOP/s (%4.0f%% of sgemm) | teacher Hq %lld "
              "hd %lld %7.2f ms %6.1f TFLOP/s | mean KL %.4f recall %.4f\n",
              (long long)c.n, (long long)c.D, (long long)c.H, (long long)c.d, loss_s * 1e3, flops / loss_s / 1e12,
              100 * flops / loss_s / 1e12 / ceiling, (long long)c.Hq, (long long)c.hd, teacher_s * 1e3,
              teacher_flops / teacher_s / 1e12, st.mean_kl(), st.recall());

  if (check) {  // the CPU f32 path on the same inputs: the same loss to f32 rounding
    const Tensor ph = p.to(Device::CPU);
    const DistillStats ref = distill_loss(cfg, w_host, {x.to(Device::CPU), ph, Tensor()}, nullptr);
    const double rel = std::abs(ref.loss - st.loss) / std::max(1e-30, std::abs(ref.loss));
    // A sanity bound (the derived tolerances live in tests/test_distill_cuda.cpp): a mismatch fails the run.
    const bool ok = rel < 1e-3 && st.rows == ref.rows;
    std::printf("  check vs CPU f32 path: loss %.6f vs %.6f (rel %.1e), recall %.4f vs %.4f -> %s\n", st.loss, ref.loss,
                rel, st.recall(), ref.recall(), ok ? "ok" : "MISMATCH");
    IC_CHECK(ok, "distill_loss_bench: the GPU loss disagrees with the CPU f32 path (rel {:.1e})", rel);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const bool quick = argc > 1 && std::string(argv[1]) == "quick";
    IC_CHECK(cuda_available(), "distill_loss_bench: no usable CUDA device");
    const double ceiling = sgemm_ceiling();
    std::printf("f32 cuBLAS GEMM (8192^3, CUBLAS_COMPUTE_32F): %.1f TFLOP/s\n", ceiling);
    // SmolLM2-135M: D 576, 9 query heads x 64 (3 KV heads); larger indexers at D 2048.
    std::vector<Case> cases = {{2048, 576, 4, 64, 9, 64}};
    if (!quick)
      cases.insert(cases.end(), {{4096, 576, 4, 64, 9, 64},
                                 {8192, 576, 4, 64, 9, 64},
                                 {8192, 576, 16, 64, 9, 64},
                                 {8192, 2048, 16, 128, 9, 64}});
    for (size_t i = 0; i < cases.size(); ++i) run_case(cases[i], ceiling, i == 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
