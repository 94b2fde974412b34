// The distillation loss and its backward on the GPU (the contract is in distill_loss.h, the math
// written out plainly in distill_loss_reference.cpp).
//
// Work for n tokens, H heads of dim d, model width D (P = n (n + 1) / 2 causal pairs; row
// blocks compute all s < t1 of their last row, so at most P + R n / 2 pairs):
//   projections   Q, K_raw, w = X [Wq; Wk; Wproj]^T            2 n D (H d + d + H)   cuBLAS
//   scores        a[(t, h), s] = q[t, h] . k[s]                2 H d P               cuBLAS
//   row kernel    head sum, log-softmax, KL, dL/dI, dL/dw, b   ~6 H P (memory bound: reads a,
//                                                              writes b: 8 H P bytes)
//   dq = b k                                                   2 H d P               cuBLAS
//   dk += b^T q                                                2 H d P               cuBLAS
//   weight grads  dW = dY^T X                                  2 n D (H d + d + H)   cuBLAS
// so ~6 H d P + 4 n D (H d + d + H) FLOPs: at n 8192, H 16, d 128, D 2048 about 0.42 TFLOP of
// f32 GEMM (H200: ~50 TFLOP/s f32 without tensor cores) and 4.3 GB of score traffic per call.
//
// Determinism: every reduction is a fixed tree (block_reduce) or a cuBLAS GEMM, which gives the
// same bits on every run on one GPU model; dK accumulates the row blocks in block order through
// GEMM beta = 1; integer atomics only (histogram counts, the first bad input's index).
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <climits>

#include "indexcache/cuda_util.cuh"
#include "indexcache/distill_loss.h"

namespace ic {

namespace {

using distill_cuda::Add;
using distill_cuda::block_reduce;
using distill_cuda::DeviceArray;
using distill_cuda::gemm_rm;
using distill_cuda::grid_for;
using distill_cuda::Max;

constexpr int kThreads = 256;       // row kernel and column sums
constexpr int kWarps = kThreads / 32;
constexpr int kTokThreads = 128;    // per-token kernels (a row of d <= a few hundred values)
constexpr int64_t kScoreBudgetBytes = int64_t{1} << 30;  // the [R H, n] score block

// ---------------------------------------------------------------------------------------
// RoPE on the leading rope_dim dims of each head, in place: pair i of token t turns by
// sign * t * base^(-2i / rope_dim); sign -1 is the inverse (= transposed) rotation, for the
// backward. Angles and the rotation in double, rounded once, like the reference.
__global__ void rope_kernel(float* v /* [n, ld], heads of head_dim from column 0 */, int64_t n, int64_t heads,
                            int64_t ld, int64_t head_dim, int64_t rope_dim, bool adjacent, float base, double sign) {
  const int64_t half = rope_dim / 2, total = n * heads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (heads * half), h = (i / half) % heads, j = i % half;
    const double ang = sign * static_cast<double>(t) * pow(static_cast<double>(base), -2.0 * j / rope_dim);
    double sn, cs;
    sincos(ang, &sn, &cs);
    float* e = v + t * ld + h * head_dim;
    const int64_t a = adjacent ? 2 * j : j, b = adjacent ? 2 * j + 1 : j + half;
    const double xa = e[a], xb = e[b];
    e[a] = static_cast<float>(xa * cs - xb * sn);
    e[b] = static_cast<float>(xa * sn + xb * cs);
  }
}

void rope(float* v, int64_t n, int64_t heads, int64_t ld, const IndexerConfig& cfg, double sign) {
  if (cfg.rope_dim == 0 || n == 0) return;
  const int64_t work = n * heads * (cfg.rope_dim / 2);
  rope_kernel<<<grid_for(work, 256), 256>>>(v, n, heads, ld, cfg.head_dim, cfg.rope_dim,
                                           cfg.rope_style == ops::RopeStyle::kAdjacent, cfg.rope_base, sign);
  IC_CUDA_CHECK_LAUNCH();
}

// Key LayerNorm, one block per token: two-pass mean and variance in f32 (as the CPU path),
// k = xhat gamma + beta (RoPE follows).
__global__ void key_norm_kernel(const float* kraw /* [n, d] */, const float* gamma, const float* beta, float eps,
                                int64_t d, float* xhat /* [n, d] */, float* rstd /* [n] */, float* k /* [n, d] */) {
  __shared__ float red[kTokThreads / 32];
  const int64_t t = blockIdx.x;
  const float* y = kraw + t * d;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += kTokThreads) s += y[c];
  const float mean = block_reduce<kTokThreads>(s, Add{}, red) / static_cast<float>(d);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += kTokThreads) v += (y[c] - mean) * (y[c] - mean);
  const float r = 1.0f / sqrtf(block_reduce<kTokThreads>(v, Add{}, red) / static_cast<float>(d) + eps);
  if (threadIdx.x == 0) rstd[t] = r;
  for (int64_t c = threadIdx.x; c < d; c += kTokThreads) {
    const float xh = (y[c] - mean) * r;
    xhat[t * d + c] = xh;
    k[t * d + c] = xh * gamma[c] + beta[c];
  }
}

// LayerNorm backward, one block per token: with g = dL/dk gamma,
// dL/dk_raw = rstd (g - mean(g) - xhat mean(g xhat)).
__global__ void key_norm_backward_kernel(const float* dk /* [n, d] pre-RoPE */, const float* gamma,
                                         const float* xhat, const float* rstd, int64_t d, float* dkraw /* [n, d] */) {
  __shared__ float red[kTokThreads / 32];
  const int64_t t = blockIdx.x;
  const float* g = dk + t * d;
  const float* xh = xhat + t * d;
  float mg = 0.0f, mgx = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += kTokThreads) {
    mg += g[c] * gamma[c];
    mgx += g[c] * gamma[c] * xh[c];
  }
  mg = block_reduce<kTokThreads>(mg, Add{}, red) / static_cast<float>(d);
  mgx = block_reduce<kTokThreads>(mgx, Add{}, red) / static_cast<float>(d);
  for (int64_t c = threadIdx.x; c < d; c += kTokThreads)
    dkraw[t * d + c] = rstd[t] * (g[c] * gamma[c] - mg - xh[c] * mgx);
}

// LayerNorm scale and bias gradients, one block per column c: sums over tokens in double,
// ADDED to the gradient (one writer per element: no atomics).
__global__ void key_norm_param_grad_kernel(const float* dk /* [n, d] pre-RoPE */, const float* xhat, int64_t n,
                                           int64_t d, float* grad_gamma, float* grad_beta) {
  __shared__ double red[kWarps];
  const int64_t c = blockIdx.x;
  double sg = 0.0, sb = 0.0;
  for (int64_t t = threadIdx.x; t < n; t += kThreads) {
    sg += static_cast<double>(dk[t * d + c]) * xhat[t * d + c];
    sb += dk[t * d + c];
  }
  sg = block_reduce<kThreads>(sg, Add{}, red);
  sb = block_reduce<kThreads>(sb, Add{}, red);
  if (threadIdx.x == 0) {
    grad_gamma[c] += static_cast<float>(sg);
    grad_beta[c] += static_cast<float>(sb);
  }
}

// ---------------------------------------------------------------------------------------
// The row kernel: one block per query row t of a row block [t0, t0 + R).
struct RowParams {
  float* a;                 // [R H, lda] pre-activations q . k, row (t - t0) H + h; rewritten as
                            // b = dL/dI w [a > 0] (0 for s > t) when dw is set
  int64_t lda;              // row stride of a (= n)
  int64_t ncols;            // columns the GEMMs read: t0 + R
  int64_t t0, n, H, topk;
  const float* w;           // [n, H] head weights, weight_scale() folded in
  const float* p;           // [n, n] targets
  const int32_t* selected;  // [n, k_sel], -1 = none; null = dense support
  int64_t k_sel;
  float* score;             // [R, n] scratch: I[t, :], then dL/dI[t, :]
  uint8_t* mark;            // [R, n] scratch: the sparse support of the row
  float* dw;                // [n, H] dL/dw; null = loss only
  double* row_loss;         // [n] KL of the row (0 when invalid)
  double* row_recall;       // [n] p's share of the causal mass on the indexer's top-k
  int32_t* row_valid;       // [n] 1 when the row has target mass on its support
};

// Float order as an unsigned key (larger float, larger key); -0 and +0 share one key because
// they compare equal in the CPU path's ordering.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct TopkShared {
  int hist[256];
  uint32_t digit;
  int remaining;
  typename cub::BlockScan<int, kThreads>::TempStorage scan;
};

// p's mass on the top-k of scores S[0, len) ordered by (score desc, index asc), k < len:
// radix select of the k-th largest key (4 passes of 8 bits, integer histogram), then the keys
// above it plus the first ties in index order (a block scan over the ties).
__device__ double topk_mass(const float* S, const float* prow, int64_t len, int64_t k, TopkShared& sh,
                            double* red) {
  const int tid = threadIdx.x;
  uint32_t prefix = 0, mask = 0;
  int remaining = static_cast<int>(k);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kThreads) sh.hist[i] = 0;
    __syncthreads();
    for (int64_t s = tid; s < len; s += kThreads) {
      const uint32_t key = order_key(S[s]);
      if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (tid == 0) {
      int rem = remaining, dg = 255;
      for (; dg > 0; --dg) {
        if (rem <= sh.hist[dg]) break;
        rem -= sh.hist[dg];
      }
      sh.digit = static_cast<uint32_t>(dg);
      sh.remaining = rem;
    }
    __syncthreads();
    prefix |= sh.digit << shift;
    mask |= 255u << shift;
    remaining = sh.remaining;
  }
  // prefix is the k-th largest key; `remaining` of its ties belong to the top-k.
  double acc = 0.0;
  for (int64_t s = tid; s < len; s += kThreads)
    if (order_key(S[s]) > prefix) acc += prow[s];
  int taken = 0;
  for (int64_t base = 0; base < len && taken < remaining; base += kThreads) {
    const int64_t s = base + tid;
    const int tie = s < len && order_key(S[s]) == prefix ? 1 : 0;
    int rank = 0, total = 0;
    cub::BlockScan<int, kThreads>(sh.scan).ExclusiveSum(tie, rank, total);
    if (tie && taken + rank < remaining) acc += prow[s];
    taken += total;
    __syncthreads();  // the scan storage is reused
  }
  return block_reduce<kThreads>(acc, Add{}, red);
}

__global__ void __launch_bounds__(kThreads) row_kernel(RowParams P) {
  __shared__ double red_d[kWarps];
  __shared__ float red_f[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ TopkShared topk_sh;
  const int tid = threadIdx.x;
  const int64_t r = blockIdx.x, t = P.t0 + r, len = t + 1, H = P.H;
  float* a = P.a + r * H * P.lda;
  float* S = P.score + r * P.n;
  const bool dense = P.selected == nullptr;
  uint8_t* mark = dense ? nullptr : P.mark + r * P.n;
  const float* w = P.w + t * H;
  const float* prow = P.p + t * P.n;

  // I[t, s] = sum_h w[h] ReLU(a[h, s]), heads in order. Thread tid owns s = tid + j kThreads
  // in every loop below, so S needs no barrier between them.
  for (int64_t s = tid; s < len; s += kThreads) {
    float acc = 0.0f;
    for (int64_t h = 0; h < H; ++h) acc += w[h] * fmaxf(a[h * P.lda + s], 0.0f);
    S[s] = acc;
    if (!dense) mark[s] = 0;
  }
  if (!dense) {
    __syncthreads();
    for (int64_t j = tid; j < P.k_sel; j += kThreads) {
      const int32_t s = P.selected[t * P.k_sel + j];
      if (s >= 0 && s <= t) mark[s] = 1;  // duplicates write the same byte
    }
    __syncthreads();
  }
  const auto in_support = [&](int64_t s) { return dense || mark[s] != 0; };

  double mass = 0.0, causal = 0.0;
  int count = 0;
  for (int64_t s = tid; s < len; s += kThreads) {
    const double ps = prow[s];
    causal += ps;
    if (in_support(s)) mass += ps, ++count;
  }
  mass = block_reduce<kThreads>(mass, Add{}, red_d);
  causal = block_reduce<kThreads>(causal, Add{}, red_d);
  count = block_reduce<kThreads>(count, Add{}, red_i);
  const bool valid = count > 0 && mass > 0.0;  // block-uniform, like every branch below
  double loss = 0.0, hit = 0.0;
  if (valid) {
    float m = -INFINITY;
    for (int64_t s = tid; s < len; s += kThreads)
      if (in_support(s)) m = fmaxf(m, S[s]);
    m = block_reduce<kThreads>(m, Max{}, red_f);
    double z = 0.0;
    for (int64_t s = tid; s < len; s += kThreads)
      if (in_support(s)) z += exp(static_cast<double>(S[s] - m));
    z = block_reduce<kThreads>(z, Add{}, red_d);
    const double lse = m + log(z);
    hit = len <= P.topk ? causal : topk_mass(S, prow, len, P.topk, topk_sh, red_d);
    const double inv_mass = 1.0 / mass;
    double kl = 0.0;
    for (int64_t s = tid; s < len; s += kThreads) {
      if (in_support(s)) {
        const double rr = prow[s] * inv_mass;
        if (rr > 0.0) kl += rr * (log(rr) - (static_cast<double>(S[s]) - lse));
        S[s] = static_cast<float>(exp(static_cast<double>(S[s]) - lse) - rr);
      } else {
        S[s] = 0.0f;
      }
    }
    loss = block_reduce<kThreads>(kl, Add{}, red_d);
  } else {
    for (int64_t s = tid; s < len; s += kThreads) S[s] = 0.0f;
  }

  if (P.dw) {
    // dw[h] = sum_s dL/dI[s] ReLU(a[h, s]); a[h, s] <- dL/dI[s] w[h] [a > 0], zero past t so the
    // GEMMs over the block's ncols columns see only the causal part.
    for (int64_t h = 0; h < H; ++h) {
      float* ah = a + h * P.lda;
      const float wh = w[h];
      double acc = 0.0;
      for (int64_t s = tid; s < P.ncols; s += kThreads) {
        const float av = ah[s];
        const float g = s < len ? S[s] : 0.0f;
        acc += static_cast<double>(g * fmaxf(av, 0.0f));
        ah[s] = s < len && av > 0.0f ? g * wh : 0.0f;
      }
      acc = block_reduce<kThreads>(acc, Add{}, red_d);
      if (tid == 0) P.dw[t * H + h] = static_cast<float>(acc);
    }
  }
  if (tid == 0) {
    P.row_loss[t] = loss;
    P.row_recall[t] = valid ? hit / causal : 0.0;
    P.row_valid[t] = valid ? 1 : 0;
  }
}

// Sums the per-row statistics in row order (one block): out = {loss, rows, recall_sum}.
__global__ void stats_kernel(const double* row_loss, const double* row_recall, const int32_t* row_valid, int64_t n,
                             double* out) {
  __shared__ double red[kWarps];
  double l = 0.0, rc = 0.0, rows = 0.0;
  for (int64_t t = threadIdx.x; t < n; t += kThreads) {
    l += row_loss[t];
    rc += row_recall[t];
    rows += row_valid[t];
  }
  l = block_reduce<kThreads>(l, Add{}, red);
  rc = block_reduce<kThreads>(rc, Add{}, red);
  rows = block_reduce<kThreads>(rows, Add{}, red);
  if (threadIdx.x == 0) out[0] = l, out[1] = rows, out[2] = rc;
}

// The first (lowest flat index) invalid input, as the CPU check reports it: p[t, s] for s <= t
// not finite or negative; selected outside [-1, n). ULLONG_MAX when none.
__global__ void check_p_kernel(const float* p, int64_t n, unsigned long long* first_bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = p[i];
    if (i % n <= i / n && !(isfinite(v) && v >= 0.0f)) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}
__global__ void check_selected_kernel(const int32_t* sel, int64_t count, int64_t n, unsigned long long* first_bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (sel[i] < -1 || sel[i] >= n) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

void check_values(const DistillInput& in, int64_t n) {
  DeviceArray<unsigned long long> bad(2);
  const unsigned long long none[2] = {ULLONG_MAX, ULLONG_MAX};
  cuda::copy(bad.get(), Device::CUDA, none, Device::CPU, sizeof(none));
  check_p_kernel<<<grid_for(n * n, 256), 256>>>(in.p.data<float>(), n, bad.get());
  IC_CUDA_CHECK_LAUNCH();
  if (in.selected.defined()) {
    check_selected_kernel<<<grid_for(in.selected.numel(), 256), 256>>>(in.selected.data<int32_t>(),
                                                                       in.selected.numel(), n, bad.get() + 1);
    IC_CUDA_CHECK_LAUNCH();
  }
  unsigned long long got[2];
  cuda::copy(got, Device::CPU, bad.get(), Device::CUDA, sizeof(got));
  if (got[0] != ULLONG_MAX) {
    float v = 0.0f;
    cuda::copy(&v, Device::CPU, in.p.data<float>() + got[0], Device::CUDA, sizeof(v));
    fail("distillation: target p[{}, {}] = {} is not a finite non-negative probability", got[0] / n, got[0] % n, v);
  }
  if (got[1] != ULLONG_MAX) {
    int32_t v = 0;
    cuda::copy(&v, Device::CPU, in.selected.data<int32_t>() + got[1], Device::CUDA, sizeof(v));
    const int64_t k = in.selected.dim(1);
    fail("distillation: selected[{}, {}] = {} is outside [-1, {})", got[1] / k, got[1] % k, v, n);
  }
}

Tensor on_device(const Tensor& t) { return !t.defined() || t.device() == Device::CUDA ? t : t.to(Device::CUDA); }

bool all_on(const IndexerWeights& w, Device dev) {
  return w.wq.device() == dev && w.wk.device() == dev && w.k_norm.device() == dev && w.k_bias.device() == dev &&
         w.wproj.device() == dev;
}

// The loss with everything on the device; grad (device) is added to when set.
DistillStats loss_on_device(const IndexerConfig& cfg, const IndexerWeights& W, const DistillInput& in,
                            IndexerWeights* grad, int64_t chunk_rows) {
  const int64_t n = in.x.dim(0), D = in.x.dim(1), H = cfg.n_heads, d = cfg.head_dim, Hd = H * d;
  const float wscale = cfg.weight_scale();
  const int64_t R = chunk_rows > 0 ? std::min(chunk_rows, n)
                                   : std::clamp<int64_t>(kScoreBudgetBytes / (4 * H * n), int64_t{1}, n);
  const float* X = in.x.data<float>();

  // Forward per token: q (RoPE), the key LayerNorm then RoPE, the scaled head weights.
  DeviceArray<float> Q(n * Hd), kraw(n * d), xhat(n * d), K(n * d), Wv(n * H), rstd(n);
  gemm_rm(false, true, n, Hd, D, 1.0f, X, D, W.wq.data<float>(), D, 0.0f, Q.get(), Hd);
  gemm_rm(false, true, n, d, D, 1.0f, X, D, W.wk.data<float>(), D, 0.0f, kraw.get(), d);
  gemm_rm(false, true, n, H, D, wscale, X, D, W.wproj.data<float>(), D, 0.0f, Wv.get(), H);
  rope(Q.get(), n, H, Hd, cfg, 1.0);
  key_norm_kernel<<<static_cast<unsigned>(n), kTokThreads>>>(kraw.get(), W.k_norm.data<float>(),
                                                             W.k_bias.data<float>(), cfg.norm_eps, d, xhat.get(),
                                                             rstd.get(), K.get());
  IC_CUDA_CHECK_LAUNCH();
  rope(K.get(), n, 1, d, cfg, 1.0);

  // Row blocks: scores, the row kernel, and (with a gradient) dq and dk.
  DeviceArray<float> A(R * H * n), score(R * n), dQ(grad ? n * Hd : 0), dK(grad ? n * d : 0), dw(grad ? n * H : 0);
  DeviceArray<uint8_t> mark(in.selected.defined() ? R * n : 0);
  DeviceArray<double> row_loss(n), row_recall(n), stats(3);
  DeviceArray<int32_t> row_valid(n);
  if (grad) cuda::memset_zero(dK.get(), n * d * static_cast<int64_t>(sizeof(float)));
  for (int64_t t0 = 0; t0 < n; t0 += R) {
    const int64_t rows = std::min(R, n - t0), cols = t0 + rows;
    const float* Qb = Q.get() + t0 * Hd;  // [rows H, d]
    gemm_rm(false, true, rows * H, cols, d, 1.0f, Qb, d, K.get(), d, 0.0f, A.get(), n);
    const RowParams P{A.get(),
                      n,
                      cols,
                      t0,
                      n,
                      H,
                      cfg.topk,
                      Wv.get(),
                      in.p.data<float>(),
                      in.selected.defined() ? in.selected.data<int32_t>() : nullptr,
                      in.selected.defined() ? in.selected.dim(1) : 0,
                      score.get(),
                      mark.get(),
                      grad ? dw.get() : nullptr,
                      row_loss.get(),
                      row_recall.get(),
                      row_valid.get()};
    row_kernel<<<static_cast<unsigned>(rows), kThreads>>>(P);
    IC_CUDA_CHECK_LAUNCH();
    if (!grad) continue;
    gemm_rm(false, false, rows * H, d, cols, 1.0f, A.get(), n, K.get(), d, 0.0f, dQ.get() + t0 * Hd, d);
    gemm_rm(true, false, cols, d, rows * H, 1.0f, A.get(), n, Qb, d, 1.0f, dK.get(), d);
  }
  stats_kernel<<<1, kThreads>>>(row_loss.get(), row_recall.get(), row_valid.get(), n, stats.get());
  IC_CUDA_CHECK_LAUNCH();

  if (grad) {
    // Back through RoPE (inverse rotation) and the LayerNorm, then dW = dY^T X into grad.
    rope(dQ.get(), n, H, Hd, cfg, -1.0);
    rope(dK.get(), n, 1, d, cfg, -1.0);
    float* dkraw = kraw.get();  // K_raw is no longer needed
    key_norm_backward_kernel<<<static_cast<unsigned>(n), kTokThreads>>>(dK.get(), W.k_norm.data<float>(),
                                                                        xhat.get(), rstd.get(), d, dkraw);
    IC_CUDA_CHECK_LAUNCH();
    key_norm_param_grad_kernel<<<static_cast<unsigned>(d), kThreads>>>(dK.get(), xhat.get(), n, d,
                                                                       grad->k_norm.data<float>(),
                                                                       grad->k_bias.data<float>());
    IC_CUDA_CHECK_LAUNCH();
    gemm_rm(true, false, Hd, D, n, 1.0f, dQ.get(), Hd, X, D, 1.0f, grad->wq.data<float>(), D);
    gemm_rm(true, false, d, D, n, 1.0f, dkraw, d, X, D, 1.0f, grad->wk.data<float>(), D);
    gemm_rm(true, false, H, D, n, wscale, dw.get(), H, X, D, 1.0f, grad->wproj.data<float>(), D);
  }
  double s[3];
  cuda::copy(s, Device::CPU, stats.get(), Device::CUDA, sizeof(s));  // synchronises
  DistillStats st;
  st.loss = s[0];
  st.rows = static_cast<int64_t>(s[1]);
  st.recall_sum = s[2];
  return st;
}

}  // namespace

DistillStats distill_loss_cuda(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                               IndexerWeights* grad, int64_t chunk_rows) {
  const int64_t n = distill_detail::check_shapes(cfg, w, in, grad);
  IC_CHECK(chunk_rows >= 0, "distill_loss_cuda: chunk_rows must be >= 0 (0 = automatic), got {}", chunk_rows);
  IC_CHECK(cuda_available(), "distill_loss_cuda: no usable CUDA device");
  IC_CHECK(!grad || all_on(*grad, Device::CPU) || all_on(*grad, Device::CUDA),
           "distill_loss_cuda: the gradient tensors must all be on the host or all on the GPU");
  const DistillInput din{on_device(in.x), on_device(in.p), on_device(in.selected)};
  const IndexerWeights dw = all_on(w, Device::CUDA) ? w : weights_to(w, Device::CUDA);
  check_values(din, n);
  if (!grad || all_on(*grad, Device::CUDA)) return loss_on_device(cfg, dw, din, grad, chunk_rows);
  IndexerWeights g = weights_to(IndexerWeights::zeros(cfg, in.x.dim(1)), Device::CUDA);
  const DistillStats st = loss_on_device(cfg, dw, din, &g, chunk_rows);
  axpy_weights(1.0f, weights_to(g, Device::CPU), *grad);
  return st;
}

}  // namespace ic
