// The plain double-precision reference of the distillation loss and its backward: every
// intermediate materialised, one loop per formula, nothing fused. Kept forever next to the
// fast path (distill_loss.cpp) as its oracle; the gradient itself is checked against finite
// differences of this loss (tests/test_distill.cpp).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "indexcache/distill_loss.h"

namespace ic {

namespace {

using Vec = std::vector<double>;

// Rotates v [rope_dim leading dims of a head] by angle pos * base^(-2i/rope_dim) per pair;
// sign = -1 applies the inverse (= transposed) rotation.
void rope_d(double* v, double pos, const IndexerConfig& cfg, double sign) {
  const int64_t half = cfg.rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double ang = sign * pos * std::pow(static_cast<double>(cfg.rope_base), -2.0 * i / cfg.rope_dim);
    const int64_t a = cfg.rope_style == ops::RopeStyle::kAdjacent ? 2 * i : i;
    const int64_t b = cfg.rope_style == ops::RopeStyle::kAdjacent ? 2 * i + 1 : i + half;
    const double xa = v[a], xb = v[b];
    v[a] = xa * std::cos(ang) - xb * std::sin(ang);
    v[b] = xa * std::sin(ang) + xb * std::cos(ang);
  }
}

// Row t's support: dense s <= t, or the distinct selected indices in [0, t], ascending.
std::vector<int64_t> support(const DistillInput& in, int64_t t) {
  std::vector<int64_t> s;
  if (!in.selected.defined()) {
    s.resize(static_cast<size_t>(t + 1));
    std::iota(s.begin(), s.end(), int64_t{0});
    return s;
  }
  const int64_t k = in.selected.dim(1);
  for (int64_t j = 0; j < k; ++j) {
    const int32_t v = in.selected.data<int32_t>()[t * k + j];
    if (v >= 0 && v <= t) s.push_back(v);
  }
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

}  // namespace

DistillStats distill_loss_reference(const IndexerConfig& cfg, const IndexerWeights& W, const DistillInput& in,
                                    IndexerWeights* grad) {
  const int64_t n = distill_detail::check_input(cfg, W, in, grad);
  const int64_t dim = in.x.dim(1), H = cfg.n_heads, d = cfg.head_dim;
  const double scale = cfg.weight_scale();  // the model's (float) constant, exactly
  const float* X = in.x.data<float>();
  const float* P = in.p.data<float>();
  const float* Wq = W.wq.data<float>();
  const float* Wk = W.wk.data<float>();
  const float* Wp = W.wproj.data<float>();
  const float* gamma = W.k_norm.data<float>();
  const float* beta = W.k_bias.data<float>();

  // Forward.
  Vec q(n * H * d), kraw(n * d), xhat(n * d), rstd(n), k(n * d), w(n * H);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < H * d; ++r) {
      double acc = 0.0;
      for (int64_t j = 0; j < dim; ++j) acc += static_cast<double>(Wq[r * dim + j]) * X[t * dim + j];
      q[t * H * d + r] = acc;
    }
    for (int64_t h = 0; h < H; ++h) rope_d(&q[(t * H + h) * d], static_cast<double>(t), cfg, 1.0);
    for (int64_t c = 0; c < d; ++c) {
      double acc = 0.0;
      for (int64_t j = 0; j < dim; ++j) acc += static_cast<double>(Wk[c * dim + j]) * X[t * dim + j];
      kraw[t * d + c] = acc;
    }
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < d; ++c) mean += kraw[t * d + c] / d;
    for (int64_t c = 0; c < d; ++c) var += (kraw[t * d + c] - mean) * (kraw[t * d + c] - mean) / d;
    rstd[t] = 1.0 / std::sqrt(var + static_cast<double>(cfg.norm_eps));
    for (int64_t c = 0; c < d; ++c) {
      xhat[t * d + c] = (kraw[t * d + c] - mean) * rstd[t];
      k[t * d + c] = xhat[t * d + c] * gamma[c] + beta[c];
    }
    rope_d(&k[t * d], static_cast<double>(t), cfg, 1.0);
    for (int64_t h = 0; h < H; ++h) {
      double acc = 0.0;
      for (int64_t j = 0; j < dim; ++j) acc += static_cast<double>(Wp[h * dim + j]) * X[t * dim + j];
      w[t * H + h] = acc * scale;
    }
  }
  Vec a(n * H * n, 0.0), I(n * n, 0.0);  // a[t, h, s] = q[t, h] . k[s]; I[t, s]
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s)
      for (int64_t h = 0; h < H; ++h) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; ++c) dot += q[(t * H + h) * d + c] * k[s * d + c];
        a[(t * H + h) * n + s] = dot;
        I[t * n + s] += w[t * H + h] * std::max(dot, 0.0);
      }

  // Loss, statistics and dL/dI.
  DistillStats st;
  Vec dI(n * n, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<int64_t> S = support(in, t);
    double mass = 0.0;
    for (int64_t s : S) mass += P[t * n + s];
    if (S.empty() || !(mass > 0.0)) continue;
    double m = -INFINITY;
    for (int64_t s : S) m = std::max(m, I[t * n + s]);
    double z = 0.0;
    for (int64_t s : S) z += std::exp(I[t * n + s] - m);
    const double lse = m + std::log(z);
    double kl = 0.0;
    for (int64_t s : S) {
      const double r = P[t * n + s] / mass;
      if (r > 0.0) kl += r * (std::log(r) - (I[t * n + s] - lse));
      dI[t * n + s] = std::exp(I[t * n + s] - lse) - r;
    }
    // Recall of the indexer's own top-k over the causal row (ties: lower index first).
    std::vector<int64_t> order(static_cast<size_t>(t + 1));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return I[t * n + x] > I[t * n + y]; });
    double causal_mass = 0.0, hit = 0.0;
    for (int64_t s = 0; s <= t; ++s) causal_mass += P[t * n + s];
    for (int64_t j = 0; j < std::min<int64_t>(cfg.topk, t + 1); ++j) hit += P[t * n + order[j]];
    st.loss += kl;
    st.rows += 1;
    st.recall_sum += hit / causal_mass;
  }
  if (!grad) return st;

  // Backward through the weighted ReLU sum.
  Vec dw(n * H, 0.0), dq(n * H * d, 0.0), dk(n * d, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const double act = a[(t * H + h) * n + s];
        dw[t * H + h] += dI[t * n + s] * std::max(act, 0.0);
        const double da = act > 0.0 ? dI[t * n + s] * w[t * H + h] : 0.0;
        for (int64_t c = 0; c < d; ++c) {
          dq[(t * H + h) * d + c] += da * k[s * d + c];
          dk[s * d + c] += da * q[(t * H + h) * d + c];
        }
      }
  // RoPE transposed, then the LayerNorm backward: with g = dL/dxhat,
  // dL/dkraw = rstd * (g - mean(g) - xhat * mean(g * xhat)).
  Vec dkraw(n * d), dgamma(d, 0.0), dbeta(d, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < H; ++h) rope_d(&dq[(t * H + h) * d], static_cast<double>(t), cfg, -1.0);
    rope_d(&dk[t * d], static_cast<double>(t), cfg, -1.0);
    Vec g(d);
    double mg = 0.0, mgx = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      dgamma[c] += dk[t * d + c] * xhat[t * d + c];
      dbeta[c] += dk[t * d + c];
      g[c] = dk[t * d + c] * gamma[c];
      mg += g[c] / d;
      mgx += g[c] * xhat[t * d + c] / d;
    }
    for (int64_t c = 0; c < d; ++c) dkraw[t * d + c] = rstd[t] * (g[c] - mg - xhat[t * d + c] * mgx);
  }
  // Projections: dW[r, j] = sum_t dY[t, r] x[t, j].
  const auto accumulate = [&](const Vec& dy, int64_t rows, double mul, Tensor& out) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < dim; ++j) {
        double acc = 0.0;
        for (int64_t t = 0; t < n; ++t) acc += dy[t * rows + r] * X[t * dim + j];
        out.data<float>()[r * dim + j] += static_cast<float>(mul * acc);
      }
  };
  accumulate(dq, H * d, 1.0, grad->wq);
  accumulate(dkraw, d, 1.0, grad->wk);
  accumulate(dw, H, scale, grad->wproj);
  for (int64_t c = 0; c < d; ++c) {
    grad->k_norm.data<float>()[c] += static_cast<float>(dgamma[c]);
    grad->k_bias.data<float>()[c] += static_cast<float>(dbeta[c]);
  }
  return st;
}

}  // namespace ic
