// Device bench of the DSA indexer scores and top-k (scripts/device-dsa.sh runs it).
// First the ceilings measured on this device: cuBLASLt bf16 and fp8 GEMM (8192^3) and a large
// device-to-device copy. Then, timed with CUDA events (median of reps, after warm-up):
//   scores: prefill chunk of T queries at the end of an L-token context (causal), H_I 32/64,
//           d_I 128, fp8 and bf16; FLOPs = 2 H d x (pairs actually scored); decode (paged,
//           batch 1 and 64): bytes = keys read (L x (d + 4)).
//   top-k:  k 2048 of one L row (decode batch 1), 64 rows, and T causal prefill rows.
// Writes a table (stdout and --out) and, with --dump DIR, a small case's inputs and outputs for
// bench/gpu/torch_dsa_index.py to check against PyTorch.
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "ops/indexer.h"
#include "ops/topk.h"

using namespace ic;
using namespace ic::ops;

namespace {

#define CUBLAS_CHECK(x)                                                            \
  do {                                                                             \
    cublasStatus_t st_ = (x);                                                      \
    if (st_ != CUBLAS_STATUS_SUCCESS) ic::fail("cuBLASLt error {} at {}", int(st_), #x); \
  } while (0)

__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// Finite e4m3 codes of magnitude below 4, random sign (never NaN, never all zero).
__global__ void fill_fp8(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint32_t h = hash32(seed * 0x9E3779B97F4A7C15ULL + i);
    p[i] = static_cast<uint8_t>((h % 0x48) | (h & 0x100 ? 0x80 : 0));
  }
}
// Uniform in [lo, hi).
__global__ void fill_f32(float* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    p[i] = lo + (hi - lo) * (hash32(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f);
}
__global__ void fill_bf16(uint16_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = ((hash32(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f)) * 4.0f - 2.0f;
    p[i] = static_cast<uint16_t>(__float_as_uint(v) >> 16);
  }
}

template <typename T>
T* dalloc(int64_t n) {
  void* p = nullptr;
  IC_CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T)));
  return static_cast<T*>(p);
}

// Median time in ms of f() over reps, after warm-ups.
template <typename F>
double time_ms(F f, int reps = 10, int warm = 2) {
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
  IC_CUDA_CHECK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

FILE* g_out = nullptr;
void row(const std::string& s) {
  std::printf("%s\n", s.c_str());
  if (g_out) std::fprintf(g_out, "%s\n", s.c_str());
  std::fflush(stdout);
}

// cuBLASLt D = A^T B at m = n = k = size; returns TFLOP/s (median of 10).
double gemm_tflops(bool fp8, int64_t size) {
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  const int64_t n = size;
  void* A = dalloc<uint8_t>(n * n * 2);
  void* B = dalloc<uint8_t>(n * n * 2);
  void* D = dalloc<uint16_t>(n * n);
  if (fp8) {
    fill_fp8<<<1024, 256>>>(static_cast<uint8_t*>(A), n * n, 1);
    fill_fp8<<<1024, 256>>>(static_cast<uint8_t*>(B), n * n, 2);
  } else {
    fill_bf16<<<1024, 256>>>(static_cast<uint16_t*>(A), n * n, 1);
    fill_bf16<<<1024, 256>>>(static_cast<uint16_t*>(B), n * n, 2);
  }
  cublasLtMatmulDesc_t op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof nn));
  cublasLtMatrixLayout_t la, lb, ld;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, in, n, n, n));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, in, n, n, n));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, n, n, n));
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws_bytes = 64 << 20;
  void* ws = dalloc<uint8_t>(static_cast<int64_t>(ws_bytes));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                    sizeof ws_bytes));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, &heur, &found));
  IC_CHECK(found > 0, "cuBLASLt found no {} algorithm", fp8 ? "fp8" : "bf16");
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = time_ms([&] {
    CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo, ws, ws_bytes, 0));
  });
  cudaFree(A);
  cudaFree(B);
  cudaFree(D);
  cudaFree(ws);
  cublasLtDestroy(lt);
  return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

double copy_gbps() {
  const int64_t bytes = int64_t{4} << 30;
  void* a = dalloc<uint8_t>(bytes);
  void* b = dalloc<uint8_t>(bytes);
  IC_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms = time_ms([&] { IC_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
}

struct Ceil {
  double bf16, fp8, copy;
};

// Prefill chunk: T queries at positions L - T .. L - 1.
void bench_scores(const Ceil& c, DType dt, int64_t H, int64_t d, int64_t L, int64_t T) {
  const int64_t es = dt == DType::BF16 ? 2 : 1;
  uint8_t* q = dalloc<uint8_t>(T * H * d * es);
  uint8_t* k = dalloc<uint8_t>(L * d * es);
  float* ks = dalloc<float>(L);
  float* w = dalloc<float>(T * H);
  float* out = dalloc<float>(T * L);
  if (dt == DType::BF16) {
    fill_bf16<<<1024, 256>>>(reinterpret_cast<uint16_t*>(q), T * H * d, 3);
    fill_bf16<<<1024, 256>>>(reinterpret_cast<uint16_t*>(k), L * d, 4);
  } else {
    fill_fp8<<<1024, 256>>>(q, T * H * d, 3);
    fill_fp8<<<1024, 256>>>(k, L * d, 4);
  }
  fill_f32<<<1024, 256>>>(ks, L, 5, 0.5f, 1.5f);
  fill_f32<<<1024, 256>>>(w, T * H, 6, -0.1f, 0.1f);
  const IndexerParams p{q, k, dt == DType::BF16 ? nullptr : ks, w, dt, T, H, d, L, L - T};
  const double ms = time_ms([&] { cuda::indexer_scores(p, out); }, L >= 120000 ? 5 : 10, 1);
  const double pairs = static_cast<double>(T) * (L - T) + static_cast<double>(T) * (T + 1) / 2;
  const double tflops = 2.0 * H * d * pairs / (ms * 1e-3) / 1e12;
  const double ceil = dt == DType::BF16 ? c.bf16 : c.fp8;
  char buf[256];
  std::snprintf(buf, sizeof buf, "scores prefill %-4s H %2lld d %lld L %6lld T %lld | %9.3f ms | %7.1f TFLOP/s | %5.1f%% of %s GEMM",
                dt == DType::BF16 ? "bf16" : "fp8", (long long)H, (long long)d, (long long)L, (long long)T, ms, tflops,
                100 * tflops / ceil, dt == DType::BF16 ? "bf16" : "fp8");
  row(buf);
  cudaFree(q);
  cudaFree(k);
  cudaFree(ks);
  cudaFree(w);
  cudaFree(out);
}

// Paged decode: batch sequences of L keys each.
void bench_paged(const Ceil& c, int64_t H, int64_t d, int64_t L, int64_t batch) {
  const int64_t pages_per = (L + 63) / 64, n_pages = pages_per * batch, pb = indexer_page_bytes(d);
  uint8_t* q = dalloc<uint8_t>(batch * H * d);
  float* w = dalloc<float>(batch * H);
  uint8_t* cache = dalloc<uint8_t>(n_pages * pb);
  int32_t* table = dalloc<int32_t>(n_pages);
  int32_t* lens = dalloc<int32_t>(batch);
  float* out = dalloc<float>(batch * L);
  int32_t* tk = dalloc<int32_t>(batch * 2048);
  fill_fp8<<<1024, 256>>>(q, batch * H * d, 7);
  fill_f32<<<1024, 256>>>(w, batch * H, 8, -0.1f, 0.1f);
  fill_fp8<<<4096, 256>>>(cache, n_pages * pb, 9);
  // Scales: overwrite each page's scale block with positive floats.
  std::vector<int32_t> ht(n_pages), hl(batch, static_cast<int32_t>(L));
  for (int64_t i = 0; i < n_pages; ++i) ht[i] = static_cast<int32_t>((i * 7919) % n_pages);  // scattered pages
  IC_CUDA_CHECK(cudaMemcpy(table, ht.data(), n_pages * 4, cudaMemcpyHostToDevice));
  IC_CUDA_CHECK(cudaMemcpy(lens, hl.data(), batch * 4, cudaMemcpyHostToDevice));
  std::vector<float> sc(64, 1.0f);
  for (int64_t i = 0; i < n_pages; ++i)
    IC_CUDA_CHECK(cudaMemcpy(cache + i * pb + 64 * d, sc.data(), 256, cudaMemcpyHostToDevice));
  const IndexerPagedParams p{q, w, cache, table, lens, batch, H, d, pages_per, n_pages, L};
  const double ms = time_ms([&] { cuda::indexer_scores_paged(p, out); }, 20, 3);
  const double bytes = static_cast<double>(batch) * L * (d + 4);
  const double tflops = 2.0 * H * d * batch * L / (ms * 1e-3) / 1e12;
  char buf[256];
  std::snprintf(buf, sizeof buf, "scores decode  fp8  H %2lld d %lld L %6lld B %3lld | %9.4f ms | %7.1f TFLOP/s | %6.0f GB/s = %4.1f%% of copy",
                (long long)H, (long long)d, (long long)L, (long long)batch, ms, tflops, bytes / (ms * 1e-3) / 1e9,
                100 * bytes / (ms * 1e-3) / 1e9 / c.copy);
  row(buf);
  cudaFree(q);
  cudaFree(w);
  cudaFree(cache);
  cudaFree(table);
  cudaFree(lens);
  cudaFree(out);
  cudaFree(tk);
}

void bench_topk(const Ceil& c, const char* what, int64_t rows, int64_t L, bool causal, int64_t k) {
  float* s = dalloc<float>(rows * L);
  int32_t* out = dalloc<int32_t>(rows * k);
  fill_f32<<<4096, 256>>>(s, rows * L, 11, -4.0f, 4.0f);
  TopkParams p{s, out, rows, L, causal ? L - rows : L - 1, k};
  std::vector<int32_t> lens(rows, static_cast<int32_t>(L));
  int32_t* dl = nullptr;
  if (!causal) {
    dl = dalloc<int32_t>(rows);
    IC_CUDA_CHECK(cudaMemcpy(dl, lens.data(), rows * 4, cudaMemcpyHostToDevice));
    p.lengths = dl;
    p.q_pos0 = 0;
  }
  const double ms = time_ms([&] { cuda::topk(p); }, 50, 5);
  const double bytes = static_cast<double>(rows) * L * 4;
  char buf[256];
  std::snprintf(buf, sizeof buf, "topk %-13s k %lld L %6lld rows %4lld | %9.4f ms = %8.1f us | %6.0f GB/s (one read of the rows) = %4.1f%% of copy",
                what, (long long)k, (long long)L, (long long)rows, ms, ms * 1e3, bytes / (ms * 1e-3) / 1e9,
                100 * bytes / (ms * 1e-3) / 1e9 / c.copy);
  row(buf);
  cudaFree(s);
  cudaFree(out);
  if (dl) cudaFree(dl);
}

template <typename T>
void dump(const std::string& dir, const char* name, const T* dev, int64_t n) {
  std::vector<T> h(n);
  IC_CUDA_CHECK(cudaMemcpy(h.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost));
  FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
  IC_CHECK(f, "cannot write {}/{}", dir, name);
  std::fwrite(h.data(), sizeof(T), n, f);
  std::fclose(f);
}

// A small fp8 and bf16 case for the PyTorch check: inputs, our scores and our top-k.
void dump_check(const std::string& dir) {
  const int64_t T = 256, H = 64, d = 128, L = 10000, K = 2048;
  for (DType dt : {DType::F8_E4M3, DType::BF16}) {
    const int64_t es = dt == DType::BF16 ? 2 : 1;
    const std::string tag = dt == DType::BF16 ? "bf16" : "fp8";
    uint8_t* q = dalloc<uint8_t>(T * H * d * es);
    uint8_t* k = dalloc<uint8_t>(L * d * es);
    float* ks = dalloc<float>(L);
    float* w = dalloc<float>(T * H);
    float* out = dalloc<float>(T * L);
    int32_t* tk = dalloc<int32_t>(T * K);
    if (dt == DType::BF16) {
      fill_bf16<<<1024, 256>>>(reinterpret_cast<uint16_t*>(q), T * H * d, 13);
      fill_bf16<<<1024, 256>>>(reinterpret_cast<uint16_t*>(k), L * d, 14);
    } else {
      fill_fp8<<<1024, 256>>>(q, T * H * d, 13);
      fill_fp8<<<1024, 256>>>(k, L * d, 14);
    }
    fill_f32<<<1024, 256>>>(ks, L, 15, 0.5f, 1.5f);
    fill_f32<<<1024, 256>>>(w, T * H, 16, -0.1f, 0.1f);
    const IndexerParams p{q, k, dt == DType::BF16 ? nullptr : ks, w, dt, T, H, d, L, L - T};
    cuda::indexer_scores(p, out);
    cuda::mask_score_tails(out, T, L, nullptr, nullptr, L - T);
    cuda::indexer_topk(p, tk, K);
    IC_CUDA_CHECK(cudaDeviceSynchronize());
    dump(dir, (tag + "_q.bin").c_str(), q, T * H * d * es);
    dump(dir, (tag + "_k.bin").c_str(), k, L * d * es);
    dump(dir, (tag + "_ks.bin").c_str(), ks, L);
    dump(dir, (tag + "_w.bin").c_str(), w, T * H);
    dump(dir, (tag + "_scores.bin").c_str(), out, T * L);
    dump(dir, (tag + "_topk.bin").c_str(), tk, T * K);
    cudaFree(q);
    cudaFree(k);
    cudaFree(ks);
    cudaFree(w);
    cudaFree(out);
    cudaFree(tk);
  }
  row("dumped check case (T 256, H 64, d 128, L 10000, k 2048) to " + dir);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path, dump_dir;
  bool quick = false, topk_only = false;
  std::vector<int64_t> lengths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--dump" && i + 1 < argc) dump_dir = argv[++i];
    else if (a == "--quick") quick = true;
    else if (a == "--topk-only") topk_only = true;
    else if (a == "--lengths" && i + 1 < argc) {  // comma-separated context lengths
      std::string v = argv[++i];
      for (size_t pos = 0; pos < v.size();) {
        const size_t end = v.find(',', pos);
        lengths.push_back(std::stoll(v.substr(pos, end - pos)));
        pos = end == std::string::npos ? v.size() : end + 1;
      }
    }
  }
  if (!out_path.empty()) g_out = std::fopen(out_path.c_str(), "w");
  try {
    cudaDeviceProp prop{};
    IC_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    row(std::string("device: ") + prop.name + ", " + std::to_string(prop.multiProcessorCount) + " SMs");
    if (!dump_dir.empty()) dump_check(dump_dir);
    Ceil c{1, 1, 4000};
    if (!topk_only) {
    c.bf16 = gemm_tflops(false, 8192);
    c.fp8 = gemm_tflops(true, 8192);
    c.copy = copy_gbps();
    char buf[256];
    std::snprintf(buf, sizeof buf, "ceilings: cuBLASLt bf16 GEMM 8192^3 %.1f TFLOP/s | fp8 e4m3 GEMM %.1f TFLOP/s | D2D copy %.0f GB/s (read+write)",
                  c.bf16, c.fp8, c.copy);
    row(buf);
    }
    const std::vector<int64_t> Ls = !lengths.empty() ? lengths
                                    : quick         ? std::vector<int64_t>{10000, 60000}
                                                    : std::vector<int64_t>{10000, 60000, 120000, 200000};
    const int64_t T = 4096;
    for (int64_t L : topk_only ? std::vector<int64_t>{} : Ls)
      for (DType dt : {DType::F8_E4M3, DType::BF16})
        for (int64_t H : {32, 64}) bench_scores(c, dt, H, 128, L, std::min(T, L));
    for (int64_t L : topk_only ? std::vector<int64_t>{} : Ls)
      for (int64_t B : {1, 64}) bench_paged(c, 64, 128, L, B);
    for (int64_t L : Ls) {
      bench_topk(c, "decode b1", 1, L, false, 2048);
      bench_topk(c, "decode b64", 64, L, false, 2048);
      bench_topk(c, "prefill", std::min<int64_t>(4096, L), L, true, 2048);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  if (g_out) std::fclose(g_out);
  return 0;
}
