// Workbench of the sparse attention kernels (ops::cuda::sparse_mla, ops::cuda::sparse_attention):
// measures the device's two ceilings (a cuBLAS bf16 GEMM, a device-to-device copy), then times
// each case, checks two sampled tokens of it against the plain CPU reference, and prints
// achieved TFLOP/s and GB/s against the ceilings.
//
//   sparse_attention_bench [DUMP_DIR]   DUMP_DIR: also write one MLA and one GQA case (inputs
//                                       and our outputs) for bench/gpu/torch_sparse_attention.py
//   sparse_attention_bench profile      one MLA prefill case only (for ncu)
//
// Counts (all entries valid, as the benchmark's index lists are):
//   MLA: FLOPs = n_q * H * k * 2 * (576 + 512); bytes = n_q * k * 1152 (gathered latent rows)
//        + q (bf16) + out (f32) + indices.
//   GQA: FLOPs = n_q * H * k * 4 * D; bytes = n_q * kv_heads * k * 2 * D * sizeof(cache element)
//        + q + out (f32) + indices.
// Indices are uniform over the context (a hash of the token and entry) for prefill; decode gives
// each sequence of the batch its own region of the cache, as a paged cache would, and draws
// distinct rows ((a i + b) mod N, a odd, N a power of two), so no row is counted twice.
#include <cublas_v2.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "ops/sparse_attention.h"
#include "ops/sparse_mla.h"

namespace {

using namespace ic;

__host__ __device__ uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Roughly normal (sum of four uniforms, scaled to unit variance): never zeros.
__device__ float pseudo_normal(uint32_t seed, uint64_t i) {
  float s = 0.0f;
  for (uint32_t j = 0; j < 4; ++j) s += hash32(seed ^ hash32(static_cast<uint32_t>(i * 4 + j) ^ static_cast<uint32_t>(i >> 30))) * (1.0f / 4294967296.0f);
  return (s - 2.0f) * 1.7320508f;
}

__global__ void fill_bf16(uint16_t* p, uint64_t n, uint32_t seed) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x) {
    const float f = pseudo_normal(seed, i);
    uint32_t u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = static_cast<uint16_t>(u >> 16);
  }
}
// fp8 MLA cache rows (656 bytes): e4m3 of 16 x a pseudo-normal value, scales 1/16, bf16 RoPE.
__global__ void fill_fp8_rows(uint8_t* kv, int64_t rows, uint32_t seed) {
  const uint64_t n = uint64_t(rows) * 656;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x) {
    const uint64_t c = i % 656;
    if (c < 512) {
      kv[i] = __nv_cvt_float_to_fp8(16.0f * pseudo_normal(seed, i), __NV_SATFINITE, __NV_E4M3);
    } else if (c < 528) {
      if (c % 4 == 0) *reinterpret_cast<float*>(kv + i) = 1.0f / 16;
    } else if (c % 2 == 0) {
      uint32_t u = __float_as_uint(pseudo_normal(seed, i));
      u += 0x7fffu + ((u >> 16) & 1u);
      *reinterpret_cast<uint16_t*>(kv + i) = static_cast<uint16_t>(u >> 16);
    }
  }
}
__global__ void fill_f32(float* p, uint64_t n, uint32_t seed) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x)
    p[i] = pseudo_normal(seed, i);
}
__device__ uint64_t gcd_u64(uint64_t a, uint64_t b) {
  while (b) {
    const uint64_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

// Prefill: uniform over [0, ctx). Decode (region > 0): token t reads rows t * region + (a i + b) mod
// region with a coprime to region, so its k (<= region) indices are distinct and spread over the
// whole region for any region size (not only powers of two).
__global__ void fill_indices(int32_t* idx, int64_t n_q, int64_t k, int64_t ctx, int64_t region, uint32_t seed) {
  for (uint64_t e = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; e < uint64_t(n_q * k); e += uint64_t(gridDim.x) * blockDim.x) {
    const uint64_t t = e / k, i = e % k;
    if (region > 0) {
      uint64_t a = hash32(seed ^ static_cast<uint32_t>(t)) | 1u;
      while (gcd_u64(a, uint64_t(region)) != 1) a += 2;
      const uint64_t b = hash32(seed + 7 * static_cast<uint32_t>(t));
      idx[e] = static_cast<int32_t>(t * region + (a * i + b) % uint64_t(region));
    } else {
      idx[e] = static_cast<int32_t>(hash32(seed ^ hash32(static_cast<uint32_t>(e))) % uint64_t(ctx));
    }
  }
}

template <typename T>
T* dev_alloc(int64_t n) {
  void* p = nullptr;
  IC_CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T)));
  return static_cast<T*>(p);
}
template <typename T>
std::vector<T> to_host(const T* d, int64_t n) {
  std::vector<T> h(static_cast<size_t>(n));
  IC_CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
void write_file(const std::string& path, const void* data, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, 1, bytes, f) != bytes) ic::fail("cannot write {}", path);
  std::fclose(f);
}

// Median time in ms of `reps` runs after `warm` warm-ups, with CUDA events around each run.
template <typename F>
double time_ms(F&& f, int warm = 3, int reps = 10) {
  for (int i = 0; i < warm; ++i) f();
  IC_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  IC_CUDA_CHECK(cudaEventCreate(&a));
  IC_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    IC_CUDA_CHECK(cudaEventRecord(a));
    f();
    IC_CUDA_CHECK(cudaEventRecord(b));
    IC_CUDA_CHECK(cudaEventSynchronize(b));
    float m = 0;
    IC_CUDA_CHECK(cudaEventElapsedTime(&m, a, b));
    ms.push_back(m);
  }
  IC_CUDA_CHECK(cudaEventDestroy(a));
  IC_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Ceilings {
  double tflops, gbs;
};

Ceilings measure_ceilings() {
  const int n = 8192;
  uint16_t* a = dev_alloc<uint16_t>(int64_t(n) * n);
  uint16_t* b = dev_alloc<uint16_t>(int64_t(n) * n);
  uint16_t* c = dev_alloc<uint16_t>(int64_t(n) * n);
  fill_bf16<<<4096, 256>>>(a, uint64_t(n) * n, 1);
  fill_bf16<<<4096, 256>>>(b, uint64_t(n) * n, 2);
  IC_CUDA_CHECK_LAUNCH();
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) ic::fail("cublasCreate failed");
  const float one = 1.0f, zero = 0.0f;
  const double gemm_ms = time_ms([&] {
    if (cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
      ic::fail("cublasGemmEx failed");
  });
  cublasDestroy(h);
  IC_CUDA_CHECK(cudaFree(a));
  IC_CUDA_CHECK(cudaFree(b));
  IC_CUDA_CHECK(cudaFree(c));
  const int64_t bytes = int64_t(2) << 30;  // 2 GiB each way
  char* src = dev_alloc<char>(bytes);
  char* dst = dev_alloc<char>(bytes);
  IC_CUDA_CHECK(cudaMemset(src, 1, bytes));
  const double copy_ms = time_ms([&] { IC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  IC_CUDA_CHECK(cudaFree(src));
  IC_CUDA_CHECK(cudaFree(dst));
  const Ceilings ceil{2.0 * n * n * double(n) / (gemm_ms * 1e9), 2.0 * bytes / (copy_ms * 1e6)};
  std::printf("ceiling: cuBLAS bf16 GEMM %dx%dx%d: %.3f ms = %.1f TFLOP/s\n", n, n, n, gemm_ms, ceil.tflops);
  std::printf("ceiling: device-to-device copy of 2 GiB: %.3f ms = %.1f GB/s (read + write)\n", copy_ms, ceil.gbs);
  return ceil;
}

int failures = 0;

void report(const char* what, double ms, double flops, double bytes, const Ceilings& c, const char* check) {
  const double tf = flops / (ms * 1e9), gb = bytes / (ms * 1e6);
  std::printf("%-44s %9.4f ms %7.1f TFLOP/s (%4.0f%%) %7.0f GB/s (%4.0f%%)  %s\n", what, ms, tf, 100 * tf / c.tflops, gb,
              100 * gb / c.gbs, check);
  std::fflush(stdout);
}

// ---- MLA ----

struct MlaCase {
  const char* name;
  int64_t n_q, heads, ctx, k, region;  // region > 0: decode, token t owns rows [t region, (t + 1) region)
  ops::MlaKernel kernel = ops::MlaKernel::Wgmma;
  bool fp8 = false;  // the 656-byte fp8 cache rows
};

// Tokens 0 and n_q - 1 against the CPU reference on a compact copy (their selected rows only).
std::string check_mla(const ops::SparseMlaParams& p) {
  double worst = 0, worst_tol = 0;
  for (int64_t t : {int64_t{0}, p.n_q - 1}) {
    auto idx = to_host(p.indices + t * p.topk_k, p.topk_k);
    std::vector<uint16_t> rows(p.topk_k * ops::kMlaDimQK);
    std::vector<uint8_t> row8(ops::kMlaFp8RowBytes);
    for (int64_t i = 0; i < p.topk_k; ++i) {
      if (idx[i] < 0) continue;
      if (p.kv_fp8) {  // the reference reads the dequantised row (see ops/sparse_mla.h)
        IC_CUDA_CHECK(cudaMemcpy(row8.data(), p.kv_fp8 + int64_t(idx[i]) * ops::kMlaFp8RowBytes, row8.size(),
                                 cudaMemcpyDeviceToHost));
        ops::dequantize_mla_fp8(row8.data(), rows.data() + i * ops::kMlaDimQK);
      } else {
        IC_CUDA_CHECK(cudaMemcpy(rows.data() + i * ops::kMlaDimQK, p.kv + int64_t(idx[i]) * ops::kMlaDimQK,
                                 ops::kMlaDimQK * 2, cudaMemcpyDeviceToHost));
      }
      idx[i] = static_cast<int32_t>(i);
    }
    const auto q = to_host(p.q + t * p.n_heads * ops::kMlaDimQK, p.n_heads * ops::kMlaDimQK);
    const auto got = to_host(p.out + t * p.n_heads * ops::kMlaDimV, p.n_heads * ops::kMlaDimV);
    std::vector<float> ref(got.size()), lse(p.n_heads);
    ops::cpu::sparse_mla_reference({q.data(), rows.data(), idx.data(), ref.data(), lse.data(), 1, p.n_heads,
                                    p.topk_k, p.topk_k, p.scale});
    // The bound of tests/test_sparse_attention_cuda.cpp: max|v| (2 e + 2^-8 + (k + 32) 2^-24).
    double qn = 0, kn = 0, vmax = 0;
    for (int64_t r = 0; r < p.n_heads; ++r) {
      double s = 0;
      for (int64_t c = 0; c < ops::kMlaDimQK; ++c) s += std::pow(double(bf16_to_f32(q[r * ops::kMlaDimQK + c])), 2);
      qn = std::max(qn, std::sqrt(s));
    }
    for (int64_t r = 0; r < p.topk_k; ++r) {
      double s = 0;
      for (int64_t c = 0; c < ops::kMlaDimQK; ++c) {
        const double x = bf16_to_f32(rows[r * ops::kMlaDimQK + c]);
        s += x * x;
        if (c < ops::kMlaDimV) vmax = std::max(vmax, std::fabs(x));
      }
      kn = std::max(kn, std::sqrt(s));
    }
    const double u = std::ldexp(1.0, -24), e = 576 * u / (1 - 576 * u) * p.scale * qn * kn;
    worst_tol = vmax * (2 * e + 2.0 / 512 + (p.topk_k + 32) * u);
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
  }
  if (!(worst <= worst_tol)) ++failures;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s (max err %.2e, bound %.2e)", worst <= worst_tol ? "ok" : "FAIL", worst, worst_tol);
  return buf;
}

void run_mla(const MlaCase& c, const Ceilings& ceil, const std::string& dump) {
  const int64_t rows = c.region > 0 ? c.n_q * c.region : c.ctx;
  uint16_t* q = dev_alloc<uint16_t>(c.n_q * c.heads * ops::kMlaDimQK);
  uint16_t* kv = c.fp8 ? nullptr : dev_alloc<uint16_t>(rows * ops::kMlaDimQK);
  uint8_t* kv8 = c.fp8 ? dev_alloc<uint8_t>(rows * ops::kMlaFp8RowBytes) : nullptr;
  int32_t* idx = dev_alloc<int32_t>(c.n_q * c.k);
  float* out = dev_alloc<float>(c.n_q * c.heads * ops::kMlaDimV);
  float* lse = dev_alloc<float>(c.n_q * c.heads);
  fill_bf16<<<4096, 256>>>(q, uint64_t(c.n_q * c.heads * ops::kMlaDimQK), 11);
  if (c.fp8)
    fill_fp8_rows<<<4096, 256>>>(kv8, rows, 12);
  else
    fill_bf16<<<4096, 256>>>(kv, uint64_t(rows * ops::kMlaDimQK), 12);
  fill_indices<<<2048, 256>>>(idx, c.n_q, c.k, c.ctx, c.region, 13);
  IC_CUDA_CHECK_LAUNCH();
  ops::SparseMlaParams p{q, kv, idx, out, lse, c.n_q, c.heads, rows, c.k, 1.0f / std::sqrt(576.0f)};
  p.kv_fp8 = kv8;
  p.kernel = c.kernel;
  const double ms = time_ms([&] { ops::cuda::sparse_mla(p); });
  const std::string check = check_mla(p);
  const double flops = double(c.n_q) * c.heads * c.k * 2 * (576 + 512);
  const double row_bytes = c.fp8 ? ops::kMlaFp8RowBytes : 1152;
  const double bytes = double(c.n_q) * c.k * row_bytes + c.n_q * c.heads * (576 * 2 + 512 * 4 + 4) + c.n_q * c.k * 4.0;
  char what[96];
  std::snprintf(what, sizeof what, "mla %s %s%s T=%lld H=%lld k=%lld ctx=%lld", c.name,
                c.kernel == ops::MlaKernel::Wgmma ? "wgmma" : "mma", c.fp8 ? " fp8" : "", (long long)c.n_q,
                (long long)c.heads, (long long)c.k, (long long)c.ctx);
  report(what, ms, flops, bytes, ceil, check.c_str());
  if (!dump.empty() && !c.fp8) {
    const auto hq = to_host(q, c.n_q * c.heads * ops::kMlaDimQK);
    const auto hkv = to_host(kv, rows * ops::kMlaDimQK);
    const auto hidx = to_host(idx, c.n_q * c.k);
    const auto hout = to_host(out, c.n_q * c.heads * ops::kMlaDimV);
    const auto hlse = to_host(lse, c.n_q * c.heads);
    write_file(dump + "/mla_q.bin", hq.data(), hq.size() * 2);
    write_file(dump + "/mla_kv.bin", hkv.data(), hkv.size() * 2);
    write_file(dump + "/mla_idx.bin", hidx.data(), hidx.size() * 4);
    write_file(dump + "/mla_out.bin", hout.data(), hout.size() * 4);
    write_file(dump + "/mla_lse.bin", hlse.data(), hlse.size() * 4);
    FILE* f = std::fopen((dump + "/mla.txt").c_str(), "w");
    std::fprintf(f, "%lld %lld %lld %lld %.9g\n", (long long)c.n_q, (long long)c.heads, (long long)rows,
                 (long long)c.k, double(p.scale));
    std::fclose(f);
  }
  for (void* x : {(void*)q, (void*)kv, (void*)kv8, (void*)idx, (void*)out, (void*)lse}) IC_CUDA_CHECK(cudaFree(x));
}

// ---- GQA ----

struct GqaCase {
  const char* name;
  int64_t n_q, heads, kv_heads, dim, cap, k;
  bool bf16;
};

std::string check_gqa(const ops::SparseAttentionParams& p) {
  double worst = 0, tol = 0;
  for (int64_t t : {int64_t{0}, p.n_q - 1}) {
    auto idx = to_host(p.topk + t * p.topk_k, p.topk_k);
    const int64_t d = p.head_dim, n = p.topk_k;
    std::vector<float> k(p.n_kv_heads * n * d), v(k.size());
    for (int64_t g = 0; g < p.n_kv_heads; ++g)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t src = (g * p.kv_capacity + idx[i]) * d, dst = (g * n + i) * d;
        if (p.k_bf16) {
          std::vector<uint16_t> kr(d), vr(d);
          IC_CUDA_CHECK(cudaMemcpy(kr.data(), p.k_bf16 + src, d * 2, cudaMemcpyDeviceToHost));
          IC_CUDA_CHECK(cudaMemcpy(vr.data(), p.v_bf16 + src, d * 2, cudaMemcpyDeviceToHost));
          for (int64_t c = 0; c < d; ++c) k[dst + c] = bf16_to_f32(kr[c]), v[dst + c] = bf16_to_f32(vr[c]);
        } else {
          IC_CUDA_CHECK(cudaMemcpy(k.data() + dst, p.k + src, d * 4, cudaMemcpyDeviceToHost));
          IC_CUDA_CHECK(cudaMemcpy(v.data() + dst, p.v + src, d * 4, cudaMemcpyDeviceToHost));
        }
      }
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
    const auto q = to_host(p.q + t * p.n_heads * d, p.n_heads * d);
    const auto got = to_host(p.out + t * p.n_heads * d, p.n_heads * d);
    std::vector<float> ref(got.size()), lse(p.n_heads);
    ops::cpu::sparse_attention_reference({q.data(), k.data(), v.data(), idx.data(), ref.data(), lse.data(), 1,
                                          p.n_heads, p.n_kv_heads, d, n, n - 1, n, p.scale});
    double qn = 0, kn = 0, vmax = 0;
    for (int64_t r = 0; r * d < int64_t(q.size()); ++r) {
      double s = 0;
      for (int64_t c = 0; c < d; ++c) s += double(q[r * d + c]) * q[r * d + c];
      qn = std::max(qn, std::sqrt(s));
    }
    for (int64_t r = 0; r * d < int64_t(k.size()); ++r) {
      double s = 0;
      for (int64_t c = 0; c < d; ++c) s += double(k[r * d + c]) * k[r * d + c], vmax = std::max(vmax, double(std::fabs(v[r * d + c])));
      kn = std::max(kn, std::sqrt(s));
    }
    const double u = std::ldexp(1.0, -24), e = d * u / (1 - d * u) * p.scale * qn * kn;
    tol = vmax * (2 * e + (n + 32) * u);
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
  }
  if (!(worst <= tol)) ++failures;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s (max err %.2e, bound %.2e)", worst <= tol ? "ok" : "FAIL", worst, tol);
  return buf;
}

void run_gqa(const GqaCase& c, const Ceilings& ceil, const std::string& dump) {
  const int64_t kv_n = c.kv_heads * c.cap * c.dim;
  float* q = dev_alloc<float>(c.n_q * c.heads * c.dim);
  void* k = c.bf16 ? (void*)dev_alloc<uint16_t>(kv_n) : (void*)dev_alloc<float>(kv_n);
  void* v = c.bf16 ? (void*)dev_alloc<uint16_t>(kv_n) : (void*)dev_alloc<float>(kv_n);
  int32_t* idx = dev_alloc<int32_t>(c.n_q * c.k);
  float* out = dev_alloc<float>(c.n_q * c.heads * c.dim);
  float* lse = dev_alloc<float>(c.n_q * c.heads);
  fill_f32<<<4096, 256>>>(q, uint64_t(c.n_q * c.heads * c.dim), 21);
  if (c.bf16) {
    fill_bf16<<<4096, 256>>>(static_cast<uint16_t*>(k), uint64_t(kv_n), 22);
    fill_bf16<<<4096, 256>>>(static_cast<uint16_t*>(v), uint64_t(kv_n), 23);
  } else {
    fill_f32<<<4096, 256>>>(static_cast<float*>(k), uint64_t(kv_n), 22);
    fill_f32<<<4096, 256>>>(static_cast<float*>(v), uint64_t(kv_n), 23);
  }
  fill_indices<<<2048, 256>>>(idx, c.n_q, c.k, c.cap, 0, 24);
  IC_CUDA_CHECK_LAUNCH();
  ops::SparseAttentionParams p{q, c.bf16 ? nullptr : static_cast<float*>(k), c.bf16 ? nullptr : static_cast<float*>(v),
                               idx, out, lse, c.n_q, c.heads, c.kv_heads, c.dim, c.cap, c.cap - 1, c.k,
                               1.0f / std::sqrt(float(c.dim))};
  // q_pos0 = cap - 1 with n_q > 1 would be past the cache for the CPU front; the kernel does not
  // look at positions (see the header), and the check remaps indices itself.
  if (c.bf16) p.k_bf16 = static_cast<uint16_t*>(k), p.v_bf16 = static_cast<uint16_t*>(v);
  const double ms = time_ms([&] { ops::cuda::sparse_attention(p); });
  const std::string check = check_gqa(p);
  const double elt = c.bf16 ? 2 : 4;
  const double flops = double(c.n_q) * c.heads * c.k * 4 * c.dim;
  const double bytes = double(c.n_q) * c.kv_heads * c.k * 2 * c.dim * elt + c.n_q * c.heads * (c.dim * 8 + 4) +
                       c.n_q * c.k * 4.0;
  char what[112];
  std::snprintf(what, sizeof what, "gqa %s %s T=%lld H=%lld/%lld D=%lld k=%lld ctx=%lld", c.name,
                c.bf16 ? "bf16" : "f32", (long long)c.n_q, (long long)c.heads, (long long)c.kv_heads,
                (long long)c.dim, (long long)c.k, (long long)c.cap);
  report(what, ms, flops, bytes, ceil, check.c_str());
  if (!dump.empty() && !c.bf16 && c.n_q > 1) {
    const auto hq = to_host(q, c.n_q * c.heads * c.dim);
    const auto hk = to_host(static_cast<float*>(k), kv_n), hv = to_host(static_cast<float*>(v), kv_n);
    const auto hidx = to_host(idx, c.n_q * c.k);
    const auto hout = to_host(out, c.n_q * c.heads * c.dim);
    write_file(dump + "/gqa_q.bin", hq.data(), hq.size() * 4);
    write_file(dump + "/gqa_k.bin", hk.data(), hk.size() * 4);
    write_file(dump + "/gqa_v.bin", hv.data(), hv.size() * 4);
    write_file(dump + "/gqa_idx.bin", hidx.data(), hidx.size() * 4);
    write_file(dump + "/gqa_out.bin", hout.data(), hout.size() * 4);
    FILE* f = std::fopen((dump + "/gqa.txt").c_str(), "w");
    std::fprintf(f, "%lld %lld %lld %lld %lld %lld %.9g\n", (long long)c.n_q, (long long)c.heads,
                 (long long)c.kv_heads, (long long)c.dim, (long long)c.cap, (long long)c.k, double(p.scale));
    std::fclose(f);
  }
  for (void* x : {(void*)q, k, v, (void*)idx, (void*)out, (void*)lse}) IC_CUDA_CHECK(cudaFree(x));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string arg = argc > 1 ? argv[1] : "";
    cudaDeviceProp prop{};
    IC_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (arg == "profile") {  // one prefill launch for ncu: the ceilings are placeholders here
      run_mla({"prefill", 4096, 64, 61440, 2048, 0, ops::MlaKernel::Wgmma}, Ceilings{1, 1}, "");
      return 0;
    }
    const std::string dump = arg;
    std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    const Ceilings ceil = measure_ceilings();
    // The split decode paths take their merge workspace with cudaMallocAsync. The default pool
    // gives memory back at every synchronisation unless told to keep it, and then each call pays
    // for a fresh allocation: measured once that way, then with the pool keeping its memory (what
    // an engine sets once at start-up).
    using ops::MlaKernel;
    run_mla({"decode-nopool", 1, 64, 32768, 2048, 32768}, ceil, "");
    cudaMemPool_t pool;
    IC_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t keep = UINT64_MAX;
    IC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    // Prefill: the context only sets where the indices point (10K fits in L2; 200K does not).
    // The mma.sync kernel (round one) at 10K beside the wgmma kernel at every size.
    for (int64_t heads : {64, 128}) {
      const int64_t n_q = heads == 64 ? 4096 : 2048;
      run_mla({"prefill", n_q, heads, 10240, 2048, 0, MlaKernel::MmaSync}, ceil, "");
      for (int64_t ctx : {10240, 61440, 122880, 204800}) run_mla({"prefill", n_q, heads, ctx, 2048, 0}, ceil, "");
      run_mla({"prefill", n_q, heads, 204800, 2048, 0, MlaKernel::Wgmma, true}, ceil, "");
    }
    // Decode: one query token per sequence, each sequence with its own 32K-row region; bf16 on
    // both kernels, then the fp8 cache (656-byte rows) on both.
    for (bool fp8 : {false, true})
      for (MlaKernel kernel : {MlaKernel::MmaSync, MlaKernel::Wgmma})
        for (int64_t heads : {64, 128})
          for (int64_t batch : {1, 64})
            run_mla({"decode", batch, heads, 32768, 2048, 32768, kernel, fp8}, ceil, "");
    // The default (wgmma) decode at every context length: each sequence owns a region of ctx rows
    // (batch 64 x 200K bf16 rows is 15.1 GB) and gathers 2,048 rows spread over it. At batch 1 the
    // 2.4 MB gathered stay in L2 across the timed repetitions (a best case); batch 64 gathers
    // 151 MB per call, more than the 50 MB L2, so it reads DRAM.
    for (bool fp8 : {false, true})
      for (int64_t ctx : {10240, 61440, 122880, 204800})
        for (int64_t heads : {64, 128})
          for (int64_t batch : {1, 64})
            run_mla({"decode", batch, heads, ctx, 2048, ctx, MlaKernel::Wgmma, fp8}, ceil, "");
    run_mla({"check", 64, 128, 10240, 2048, 0}, ceil, dump);  // the case torch checks (wgmma)
    // GQA, SmolLM2's shape (9 query heads, 3 KV heads, head dim 64) over a 16K cache.
    for (bool bf16 : {false, true}) {
      run_gqa({"prefill", 4096, 9, 3, 64, 16384, 2048, bf16}, ceil, dump);
      run_gqa({"decode", 1, 9, 3, 64, 16384, 2048, bf16}, ceil, "");
    }
    // ... and at every context length, decode at batch 1 and 64 (64 query tokens on one cache).
    for (bool bf16 : {false, true})
      for (int64_t cap : {10240, 61440, 122880, 204800}) {
        run_gqa({"prefill", 4096, 9, 3, 64, cap, 2048, bf16}, ceil, "");
        for (int64_t batch : {1, 64}) run_gqa({"decode", batch, 9, 3, 64, cap, 2048, bf16}, ceil, "");
      }
    std::printf("%s: %d check(s) failed\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
