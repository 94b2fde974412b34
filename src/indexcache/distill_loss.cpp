// The f32 fast path of the distillation loss and backward (the math is in distill_loss.h and,
// written out plainly, in distill_loss_reference.cpp).
//
// Work per sequence, n tokens, H heads of dim d, model width D, O = H d + d + H outputs:
//   projections      Y = X [Wq; Wk; Wproj]^T                         2 n D O
//   pass A (rows t)  a[h, s] = q[t, h] . k[s]; I; softmax; dL/dI; dw;   2 H d per causal pair
//                    dq[t] = sum_s (dL/dI w [a > 0])[h, s] k[s]        2 H d per causal pair
//   pass B (keys s)  dk[s] = sum_{t >= s} sum_h (...)[t, h, s] q[t, h]  2 H d per causal pair,
//                    recomputing a (another 2 H d): keys are owned by one thread each, so no
//                    atomics or per-thread copies, and the result does not depend on threads
//   weight grads     dW = dY^T X                                       2 n D O
// Memory: dL/dI as one [n, n] f32 matrix, per-token [n, O] buffers, per-thread [H, n] rows.
#include "indexcache/distill_loss.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "indexcache/teacher.h"
#include "ops/rope.h"
#include "ops/simd.h"
#include "ops/simd_dispatch.h"
#include "ops/simd_dispatch.h"

namespace ic {


namespace distill_detail {

int64_t check_shapes(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                     const IndexerWeights* grad) {
  check_tensor(in.x, "x", DType::F32, in.x.device(), 2);
  const int64_t n = in.x.dim(0), dim = in.x.dim(1);
  IC_CHECK(n >= 1, "distillation: x has no tokens");
  cfg.validate(dim);
  w.check(cfg, dim);
  if (grad) grad->check(cfg, dim);
  check_tensor(in.p, "p", DType::F32, in.p.device(), 2);
  IC_CHECK(in.p.dim(0) == n && in.p.dim(1) == n, "distillation: target p is {} but x has {} tokens (want [{}, {}])",
           in.p.shape().str(), n, n, n);
  if (in.selected.defined()) {
    check_tensor(in.selected, "selected", DType::I32, in.selected.device(), 2);
    IC_CHECK(in.selected.dim(0) == n, "distillation: selected has {} rows but x has {} tokens",
             in.selected.dim(0), n);
  }
  return n;
}

int64_t check_input(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                    const IndexerWeights* grad) {
  check_tensor(in.x, "x", DType::F32, Device::CPU, 2);
  const int64_t n = in.x.dim(0), dim = in.x.dim(1);
  IC_CHECK(n >= 1, "distillation: x has no tokens");
  cfg.validate(dim);
  w.check(cfg, dim);
  if (grad) grad->check(cfg, dim);
  check_tensor(in.p, "p", DType::F32, Device::CPU, 2);
  IC_CHECK(in.p.dim(0) == n && in.p.dim(1) == n, "distillation: target p is {} but x has {} tokens (want [{}, {}])",
           in.p.shape().str(), n, n, n);
  const float* p = in.p.data<float>();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s)
      IC_CHECK(std::isfinite(p[t * n + s]) && p[t * n + s] >= 0.0f,
               "distillation: target p[{}, {}] = {} is not a finite non-negative probability", t, s, p[t * n + s]);
  if (in.selected.defined()) {
    check_tensor(in.selected, "selected", DType::I32, Device::CPU, 2);
    IC_CHECK(in.selected.dim(0) == n, "distillation: selected has {} rows but x has {} tokens",
             in.selected.dim(0), n);
    const int32_t* sel = in.selected.data<int32_t>();
    for (int64_t i = 0; i < in.selected.numel(); ++i)
      IC_CHECK(sel[i] >= -1 && sel[i] < n, "distillation: selected[{}, {}] = {} is outside [-1, {})",
               i / in.selected.dim(1), i % in.selected.dim(1), sel[i], n);
  }
  return n;
}

}  // namespace distill_detail

namespace {

// ---------------------------------------------------------------------------------------
// C [M, N] (=|+=) A [M, K] B [K, N], row-major with leading dims. Register tiles of MR rows x
// NV vectors of 16; every C element is one fixed-order sum over k (deterministic). V: the
// 16-lane vector type of the ISA path (ops/simd_dispatch.h).
template <class V, int MR, int NV>
IC_INLINE void gemm_tile(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t K,
                         bool accumulate) {
  V c[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) c[i][j] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int j = 0; j < NV; ++j) b[j] = ops::vload<V>(B + k * ldb + 16 * j);
    for (int i = 0; i < MR; ++i) {
      const float a = A[i * lda + k];
      for (int j = 0; j < NV; ++j) c[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      float* out = C + i * ldc + 16 * j;
      ops::vstore(out, accumulate ? ops::vload<V>(out) + c[i][j] : c[i][j]);
    }
}

template <class V, int MR>
IC_INLINE void gemm_rows(int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                         int64_t ldc, bool accumulate) {
  int64_t n = 0;
  for (; n + 64 <= N; n += 64) gemm_tile<V, MR, 4>(A, lda, B + n, ldb, C + n, ldc, K, accumulate);
  for (; n + 16 <= N; n += 16) gemm_tile<V, MR, 1>(A, lda, B + n, ldb, C + n, ldc, K, accumulate);
  for (; n < N; ++n)
    for (int i = 0; i < MR; ++i) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += A[i * lda + k] * B[k * ldb + n];
      C[i * ldc + n] = accumulate ? C[i * ldc + n] + s : s;
    }
}

template <class V>
IC_INLINE void gemm_t(int64_t M, int64_t N, int64_t K, const float* A /* [M, lda] */, int64_t lda,
                      const float* B /* [K, ldb] */, int64_t ldb, float* C /* [M, ldc] */, int64_t ldc,
                      bool accumulate) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) gemm_rows<V, 4>(N, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc, accumulate);
  for (; m < M; ++m) gemm_rows<V, 1>(N, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc, accumulate);
}
IC_SIMD_DISPATCH(gemm, gemm_t)

// The same, rows of C split over threads in blocks of 16 (the split never changes a sum).
void gemm_parallel(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* C, int64_t ldc, bool accumulate) {
  const int64_t blocks = (M + 15) / 16;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t m0 = b * 16, rows = std::min<int64_t>(16, M - m0);
    gemm(rows, N, K, A + m0 * lda, lda, B, ldb, C + m0 * ldc, ldc, accumulate);
  }
}

// dst [cols, rows] = src [rows, cols]^T (leading dims given).
void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * ldd + r] = src[r * lds + c];
}

int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

// Everything pass A and pass B share for one sequence.
struct Work {
  int64_t n, H, d, O, ldn;
  const float* Y;   // [n, O] projections; q (post-RoPE) in columns [0, H d), w in [H d + d, O)
  const float* KT;  // [d, ldn] post-RoPE keys transposed, zero-padded past n
  const float* p;   // [n, n] targets
  const int32_t* selected;  // [n, k_sel] or null (dense)
  int64_t k_sel;
  int64_t topk;
  float wscale;     // the weight scale, already applied to the w columns of Y
  float* G;         // [n, ldn] dL/dI, zero for s > t
  float* dQ;        // [n, H, d] dL/dq (post-RoPE)
  float* dw;        // [n, H] dL/dw
};

struct RowScratch {
  std::vector<float> a, b, score;  // [H, ldn], [H, ldn], [ldn]
  std::vector<int32_t> idx;        // [n]
  std::vector<uint8_t> mark;       // [n], all zero between rows
};

// Pass A for query row t. Returns the row's stats.
template <class V>
IC_INLINE DistillStats row_forward_backward_t(const Work& W, int64_t t, RowScratch& rs) {
  const int64_t H = W.H, d = W.d, ldn = W.ldn, len = t + 1;
  const float* q = W.Y + t * W.O;              // [H, d]
  const float* w = W.Y + t * W.O + H * d + d;  // [H]
  float* a = rs.a.data();
  float* score = rs.score.data();
  gemm_t<V>(H, len, d, q, d, W.KT, ldn, a, ldn, false);
  for (int64_t s = 0; s < len; ++s) score[s] = 0.0f;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t s = 0; s < len; ++s) score[s] += w[h] * std::max(a[h * ldn + s], 0.0f);

  // Support: dense s <= t, or the distinct selected indices <= t.
  const float* prow = W.p + t * W.n;
  int32_t* sup = rs.idx.data();
  int64_t n_sup = 0;
  if (!W.selected) {
    for (int64_t s = 0; s < len; ++s) sup[n_sup++] = static_cast<int32_t>(s);
  } else {
    for (int64_t j = 0; j < W.k_sel; ++j) {
      const int32_t s = W.selected[t * W.k_sel + j];
      if (s >= 0 && s <= t && !rs.mark[s]) {
        rs.mark[s] = 1;
        sup[n_sup++] = s;
      }
    }
    for (int64_t j = 0; j < n_sup; ++j) rs.mark[sup[j]] = 0;
  }
  double mass = 0.0;
  for (int64_t j = 0; j < n_sup; ++j) mass += prow[sup[j]];
  DistillStats st;
  float* g = W.G + t * ldn;
  if (n_sup == 0 || !(mass > 0.0)) return st;  // G row stays zero: no gradient from this row

  float m = -INFINITY;
  for (int64_t j = 0; j < n_sup; ++j) m = std::max(m, score[sup[j]]);
  double z = 0.0;
  for (int64_t j = 0; j < n_sup; ++j) z += std::exp(static_cast<double>(score[sup[j]] - m));
  const double lse = m + std::log(z);
  const double inv_mass = 1.0 / mass;
  double kl = 0.0;
  for (int64_t j = 0; j < n_sup; ++j) {
    const int64_t s = sup[j];
    const double r = prow[s] * inv_mass;
    if (r > 0.0) kl += r * (std::log(r) - (static_cast<double>(score[s]) - lse));
    g[s] = static_cast<float>(std::exp(static_cast<double>(score[s]) - lse) - r);
  }
  st.loss = kl;
  st.rows = 1;

  // Recall: p's mass on the indexer's top-k of the causal row (ties: lower index first).
  double causal = 0.0, hit = 0.0;
  for (int64_t s = 0; s < len; ++s) causal += prow[s];
  if (len <= W.topk) {
    hit = causal;
  } else {
    int32_t* order = rs.idx.data();
    std::iota(order, order + len, 0);
    std::nth_element(order, order + W.topk - 1, order + len, [&](int32_t x, int32_t y) {
      return score[x] > score[y] || (score[x] == score[y] && x < y);
    });
    for (int64_t j = 0; j < W.topk; ++j) hit += prow[order[j]];
  }
  st.recall_sum = hit / causal;

  // dw[h] = sum_s g[s] ReLU(a[h, s]); b[h, s] = g[s] w[h] [a[h, s] > 0]; dq = b K.
  float* b = rs.b.data();
  for (int64_t h = 0; h < H; ++h) {
    const float* ah = a + h * ldn;
    float* bh = b + h * ldn;
    V acc{};
    int64_t s = 0;
    for (; s + 16 <= len; s += 16) {
      const V av = ops::vload<V>(ah + s), gv = ops::vload<V>(g + s);
      acc += gv * ops::where_positive(av, av);
      ops::vstore(bh + s, ops::where_positive(av, gv * w[h]));
    }
    float tail = 0.0f;
    for (; s < len; ++s) {
      tail += g[s] * std::max(ah[s], 0.0f);
      bh[s] = ah[s] > 0.0f ? g[s] * w[h] : 0.0f;
    }
    W.dw[t * H + h] = ops::hsum(acc) + tail;
  }
  // dq[h, c] = sum_s b[h, s] k[s, c] = (b [H, len]) (KT [d, len])^T: a [len]-long dot per (h, c).
  for (int64_t h = 0; h < H; ++h)
    for (int64_t c = 0; c < d; ++c) W.dQ[(t * H + h) * d + c] = ops::dot_f32(b + h * ldn, W.KT + c * ldn, len);
  return st;
}
IC_SIMD_DISPATCH(row_forward_backward, row_forward_backward_t)

// Pass B for the 16 keys s0..s0+15: dK[s] = sum_{t >= s} sum_h G[t, s] w[t, h] [a > 0] q[t, h].
// acc: [d, 16] scratch, lane l accumulating key s0 + l (unaligned loads/stores: the buffer
// comes from code compiled for any ISA).
template <class V>
IC_INLINE void key_block_backward_t(const Work& W, int64_t s0, float* acc /* [d, 16] */, float* dK /* [n, d] */) {
  const int64_t H = W.H, d = W.d;
  for (int64_t i = 0; i < d * 16; ++i) acc[i] = 0.0f;
  for (int64_t t = s0; t < W.n; ++t) {
    const float* grow = W.G + t * W.ldn + s0;
    bool any = false;
    for (int l = 0; l < 16; ++l) any |= grow[l] != 0.0f;
    if (!any) continue;
    const V gv = ops::vload<V>(grow);
    const float* q = W.Y + t * W.O;
    const float* w = q + H * d + d;
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = q + h * d;
      V a{};
      for (int64_t c = 0; c < d; ++c) a += qh[c] * ops::vload<V>(W.KT + c * W.ldn + s0);
      const V coef = ops::where_positive(a, gv * w[h]);
      for (int64_t c = 0; c < d; ++c) ops::vstore(acc + 16 * c, ops::vload<V>(acc + 16 * c) + coef * qh[c]);
    }
  }
  for (int l = 0; l < 16 && s0 + l < W.n; ++l)
    for (int64_t c = 0; c < d; ++c) dK[(s0 + l) * d + c] = acc[16 * c + l];
}
IC_SIMD_DISPATCH(key_block_backward, key_block_backward_t)

void rope_rows(float* x, const std::vector<int32_t>& pos, int64_t n, int64_t heads, int64_t stride,
               const IndexerConfig& cfg) {
  if (cfg.rope_dim == 0) return;
  ops::cpu::rope(ops::RopeParams{x, pos.data(), n, heads, cfg.head_dim, stride, cfg.rope_dim, cfg.rope_base,
                                 cfg.rope_style});
}

}  // namespace

DistillStats distill_loss(const IndexerConfig& cfg, const IndexerWeights& Wt, const DistillInput& in,
                          IndexerWeights* grad) {
  const int64_t n = distill_detail::check_input(cfg, Wt, in, grad);
  const int64_t D = in.x.dim(1), H = cfg.n_heads, d = cfg.head_dim, Hd = H * d, O = Hd + d + H;
  const int64_t ldn = round16(n);
  const float* X = in.x.data<float>();  // [n, D]

  // Projections through the concatenated, transposed weights WT [D, O].
  std::vector<float> WT(static_cast<size_t>(D * O));
  transpose(Wt.wq.data<float>(), Hd, D, D, WT.data(), O);
  transpose(Wt.wk.data<float>(), d, D, D, WT.data() + Hd, O);
  transpose(Wt.wproj.data<float>(), H, D, D, WT.data() + Hd + d, O);
  std::vector<float> Y(static_cast<size_t>(n * O));  // [n, O]
  gemm_parallel(n, O, D, X, D, WT.data(), O, Y.data(), O, false);

  std::vector<int32_t> pos(n), neg(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>(t), neg[t] = -static_cast<int32_t>(t);
  rope_rows(Y.data(), pos, n, H, O, cfg);  // q in place
  // Keys: LayerNorm (two-pass mean/variance), RoPE, transpose.
  const float* gamma = Wt.k_norm.data<float>();
  const float* beta = Wt.k_bias.data<float>();
  std::vector<float> xhat(n * d), rstd(n), K(n * d), KT(static_cast<size_t>(d * ldn), 0.0f);
  const float wscale = cfg.weight_scale();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    float* y = Y.data() + t * O;
    float mean = 0.0f, var = 0.0f;
    for (int64_t c = 0; c < d; ++c) mean += y[Hd + c];
    mean /= static_cast<float>(d);
    for (int64_t c = 0; c < d; ++c) var += (y[Hd + c] - mean) * (y[Hd + c] - mean);
    rstd[t] = 1.0f / std::sqrt(var / static_cast<float>(d) + cfg.norm_eps);
    for (int64_t c = 0; c < d; ++c) {
      xhat[t * d + c] = (y[Hd + c] - mean) * rstd[t];
      K[t * d + c] = xhat[t * d + c] * gamma[c] + beta[c];
    }
    for (int64_t h = 0; h < H; ++h) y[Hd + d + h] *= wscale;
  }
  rope_rows(K.data(), pos, n, 1, d, cfg);
  transpose(K.data(), n, d, d, KT.data(), ldn);

  std::vector<float> G(static_cast<size_t>(n * ldn), 0.0f), dQ(n * Hd), dw(n * H);
  Work W{n, H, d, O, ldn, Y.data(), KT.data(), in.p.data<float>(),
         in.selected.defined() ? in.selected.data<int32_t>() : nullptr,
         in.selected.defined() ? in.selected.dim(1) : 0, cfg.topk, wscale, G.data(), dQ.data(), dw.data()};

  // Pass A. Row stats are kept per row and summed in row order afterwards (deterministic).
  std::vector<DistillStats> row_stats(n);
#pragma omp parallel
  {
    RowScratch rs;
    rs.a.resize(H * ldn);
    rs.b.resize(H * ldn);
    rs.score.resize(ldn);
    rs.idx.resize(n);
    rs.mark.assign(n, 0);
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = n - 1; t >= 0; --t) row_stats[t] = row_forward_backward(W, t, rs);  // longest first
  }
  DistillStats st;
  for (const DistillStats& r : row_stats) st.add(r);
  if (!grad) return st;

  // Pass B: dK [n, d] (post-RoPE keys), one 16-key block per task.
  std::vector<float> dK(n * d);
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(d * 16));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < ldn / 16; ++b) key_block_backward(W, b * 16, acc.data(), dK.data());
  }

  // Back through RoPE (inverse rotation), the LayerNorm and into dY [n, O].
  rope_rows(dQ.data(), neg, n, H, Hd, cfg);
  rope_rows(dK.data(), neg, n, 1, d, cfg);
  std::vector<float> dY(n * O);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    float* dy = dY.data() + t * O;
    std::copy(dQ.data() + t * Hd, dQ.data() + (t + 1) * Hd, dy);
    const float* dk = dK.data() + t * d;
    const float* xh = xhat.data() + t * d;
    float mg = 0.0f, mgx = 0.0f;
    for (int64_t c = 0; c < d; ++c) {
      mg += dk[c] * gamma[c];
      mgx += dk[c] * gamma[c] * xh[c];
    }
    mg /= static_cast<float>(d);
    mgx /= static_cast<float>(d);
    for (int64_t c = 0; c < d; ++c) dy[Hd + c] = rstd[t] * (dk[c] * gamma[c] - mg - xh[c] * mgx);
    for (int64_t h = 0; h < H; ++h) dy[Hd + d + h] = dw[t * H + h] * wscale;
  }
  // LayerNorm scale and bias: sums over tokens in token order, in double.
  for (int64_t c = 0; c < d; ++c) {
    double sg = 0.0, sb = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      sg += static_cast<double>(dK[t * d + c]) * xhat[t * d + c];
      sb += dK[t * d + c];
    }
    grad->k_norm.data<float>()[c] += static_cast<float>(sg);
    grad->k_bias.data<float>()[c] += static_cast<float>(sb);
  }
  // dW [O, D] = dY^T X, accumulated straight into the gradient tensors.
  std::vector<float> dYT(static_cast<size_t>(O * n));
  transpose(dY.data(), n, O, O, dYT.data(), n);
  gemm_parallel(Hd, D, n, dYT.data(), n, X, D, grad->wq.data<float>(), D, true);
  gemm_parallel(d, D, n, dYT.data() + Hd * n, n, X, D, grad->wk.data<float>(), D, true);
  gemm_parallel(H, D, n, dYT.data() + (Hd + d) * n, n, X, D, grad->wproj.data<float>(), D, true);
  return st;
}

IndexerWeights weights_to(const IndexerWeights& w, Device device) {
  return {w.wq.to(device), w.wk.to(device), w.k_norm.to(device), w.k_bias.to(device), w.wproj.to(device)};
}

void axpy_weights(float a, const IndexerWeights& src, IndexerWeights& dst) {
  const Tensor* s[] = {&src.wq, &src.wk, &src.k_norm, &src.k_bias, &src.wproj};
  Tensor* t[] = {&dst.wq, &dst.wk, &dst.k_norm, &dst.k_bias, &dst.wproj};
  for (int i = 0; i < 5; ++i) {
    IC_CHECK(s[i]->shape() == t[i]->shape(), "axpy_weights: tensor {} is {} in the source but {} in the destination",
             i, s[i]->shape().str(), t[i]->shape().str());
    const float* x = s[i]->data<float>();
    float* y = t[i]->data<float>();
    for (int64_t j = 0; j < s[i]->numel(); ++j) y[j] += a * x[j];
  }
}

DistillStats distill_loss_multi(const IndexerConfig& cfg, const IndexerWeights& w, const Tensor& x,
                                std::span<const Tensor> targets, const Tensor& selected, MultiLayerForm form,
                                IndexerWeights* grad) {
  IC_CHECK(!targets.empty(), "distill_loss_multi: no target layers given");
  if (form == MultiLayerForm::kMeanTarget) return distill_loss(cfg, w, {x, mean_targets(targets), selected}, grad);
  const double inv = 1.0 / static_cast<double>(targets.size());
  DistillStats total;
  for (const Tensor& p : targets) {
    IndexerWeights g;
    if (grad) g = IndexerWeights::zeros(cfg, x.dim(1));
    const DistillStats st = distill_loss(cfg, w, {x, p, selected}, grad ? &g : nullptr);
    total.loss += st.loss * inv;
    total.recall_sum += st.recall_sum * inv;
    total.rows = std::max(total.rows, st.rows);
    if (grad) axpy_weights(static_cast<float>(inv), g, *grad);
  }
  return total;
}

}  // namespace ic
