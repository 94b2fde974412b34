#pragma once
// Shared by the distillation and trainer tests (test_distill.cpp, test_distill_cuda.cpp,
// test_trainer.cpp): shapes, random inputs and an independent double forward of the indexer's
// pre-activations and scores.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "indexcache/trainer.h"
#include "model/indexer.h"

namespace ic::distill_test {

// Indexer shapes the tests share: small (3 heads x 8, RoPE on 4 dims, top-k 5) for finite
// differences, mid (4 x 32, RoPE on 16, top-k 16) for the fast paths.
inline IndexerConfig small_config(ops::RopeStyle style) {
  IndexerConfig cfg;
  cfg.n_heads = 3;
  cfg.head_dim = 8;
  cfg.rope_dim = 4;
  cfg.rope_style = style;
  cfg.topk = 5;
  return cfg;
}
inline IndexerConfig mid_config(ops::RopeStyle style) {
  IndexerConfig cfg;
  cfg.n_heads = 4;
  cfg.head_dim = 32;
  cfg.rope_dim = 16;
  cfg.rope_style = style;
  cfg.topk = 16;
  return cfg;
}

// The tiny trainer run of the trainer tests (CPU and GPU): H 2, d 32, top-k 16 of 64-token
// windows, 2 windows per step, lr 1e-2 with 2 warm-up steps, clipping at 1; pattern mode trains
// F every 10 layers.
inline TrainerConfig tiny_trainer_config(DistillMode mode, int64_t steps, float rope_base, int64_t n_layers,
                                         Device device = Device::CPU) {
  TrainerConfig c;
  c.mode = mode;
  c.indexer.n_heads = 2;
  c.indexer.head_dim = 32;
  c.indexer.rope_dim = 32;
  c.indexer.topk = 16;
  c.indexer.rope_base = rope_base;
  c.adamw.lr = 1e-2;
  c.adamw.warmup_steps = 2;
  c.adamw.total_steps = steps;
  c.adamw.clip_norm = 1.0;
  c.batch = 2;
  c.seed = 5;
  c.device = device;
  if (mode == DistillMode::kPattern) c.pattern = LayerPattern::from_freq(n_layers, 10);
  return c;
}

inline Tensor random_tensor(const Shape& s, std::mt19937& gen, float sd) {
  Tensor t = Tensor::empty(s, DType::F32);
  std::normal_distribution<float> nd(0.0f, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(gen);
  return t;
}

// Random weights with a non-trivial LayerNorm (scale ~ 1 +- 0.3, bias ~ +-0.3), so every
// gradient path carries signal.
inline IndexerWeights random_weights(const IndexerConfig& cfg, int64_t dim, std::mt19937& gen) {
  IndexerWeights w = IndexerWeights::random(cfg, dim, gen());
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (int64_t c = 0; c < cfg.head_dim; ++c) {
    w.k_norm.data<float>()[c] = 1.0f + nd(gen);
    w.k_bias.data<float>()[c] = nd(gen);
  }
  return w;
}

// Random causal target rows: exp(normal) weights, about 1 in 5 set exactly to 0 (but never a
// whole row), L1-normalised; `past` (0, or NaN to catch any read of them) past t.
inline Tensor random_target(int64_t n, std::mt19937& gen, float past = 0.0f) {
  Tensor p = Tensor::empty({n, n}, DType::F32);
  std::normal_distribution<double> nd(0.0, 1.5);
  std::uniform_int_distribution<int> drop(0, 4);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> r(t + 1);
    double z = 0.0;
    for (int64_t s = 0; s <= t; ++s) z += (r[s] = (s == t || drop(gen)) ? std::exp(nd(gen)) : 0.0);
    for (int64_t s = 0; s < n; ++s) p.data<float>()[t * n + s] = s <= t ? static_cast<float>(r[s] / z) : past;
  }
  return p;
}

// An independent double forward of the pre-activations a[t, h, s] = q[t, h] . k[s] and the
// scores I[t, s] (RoPE by its definition: pair i of a head turns by pos * base^(-2i/rope_dim)).
struct Forward {
  std::vector<double> a, I;  // [n, H, n], [n, n]; zero for s > t
  double max_q = 0, max_k = 0, max_w = 0, max_rstd = 0;  // max |q[t, h]|_2, |k[s]|_2, |w|, 1/sigma
  std::vector<double> qn, kn, w;                          // |q[t, h]|_2 [n, H], |k[s]|_2 [n], w [n, H]
};
inline Forward forward(const IndexerConfig& cfg, const IndexerWeights& w, const Tensor& x) {
  const int64_t n = x.dim(0), D = x.dim(1), H = cfg.n_heads, d = cfg.head_dim;
  const auto rot = [&](std::vector<double>& v, int64_t t) {
    for (int64_t i = 0; i < cfg.rope_dim / 2; ++i) {
      const double th = t * std::pow(static_cast<double>(cfg.rope_base), -2.0 * i / cfg.rope_dim);
      const bool adj = cfg.rope_style == ops::RopeStyle::kAdjacent;
      const int64_t i0 = adj ? 2 * i : i, i1 = adj ? 2 * i + 1 : i + cfg.rope_dim / 2;
      const double u = v[i0], z = v[i1];
      v[i0] = u * std::cos(th) - z * std::sin(th);
      v[i1] = u * std::sin(th) + z * std::cos(th);
    }
  };
  const auto proj = [&](const Tensor& W, int64_t row, int64_t t) {
    double s = 0.0;
    for (int64_t j = 0; j < D; ++j) s += static_cast<double>(W.data<float>()[row * D + j]) * x.data<float>()[t * D + j];
    return s;
  };
  std::vector<std::vector<double>> q(n * H, std::vector<double>(d)), k(n, std::vector<double>(d));
  double rstd_max = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t c = 0; c < d; ++c) q[t * H + h][c] = proj(w.wq, h * d + c, t);
      rot(q[t * H + h], t);
    }
    double mu = 0.0, var = 0.0;
    for (int64_t c = 0; c < d; ++c) mu += (k[t][c] = proj(w.wk, c, t)) / d;
    for (int64_t c = 0; c < d; ++c) var += (k[t][c] - mu) * (k[t][c] - mu) / d;
    rstd_max = std::max(rstd_max, 1.0 / std::sqrt(var + cfg.norm_eps));
    for (int64_t c = 0; c < d; ++c)
      k[t][c] = (k[t][c] - mu) / std::sqrt(var + cfg.norm_eps) * w.k_norm.data<float>()[c] + w.k_bias.data<float>()[c];
    rot(k[t], t);
  }
  Forward f{std::vector<double>(n * H * n, 0.0), std::vector<double>(n * n, 0.0)};
  f.max_rstd = rstd_max;
  const auto norm = [](const std::vector<double>& v) {
    double s = 0.0;
    for (double e : v) s += e * e;
    return std::sqrt(s);
  };
  for (const auto& v : q) f.qn.push_back(norm(v)), f.max_q = std::max(f.max_q, norm(v));
  for (const auto& v : k) f.kn.push_back(norm(v)), f.max_k = std::max(f.max_k, norm(v));
  f.w.resize(n * H);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const double wt = proj(w.wproj, h, t) * cfg.weight_scale();
      f.max_w = std::max(f.max_w, std::abs(wt));
      f.w[t * H + h] = wt;
      for (int64_t s = 0; s <= t; ++s) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; ++c) dot += q[t * H + h][c] * k[s][c];
        f.a[(t * H + h) * n + s] = dot;
        f.I[t * n + s] += wt * std::max(dot, 0.0);
      }
    }
  return f;
}

inline double frob(const Tensor& t) {
  double s = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(t.data<float>()[i]) * t.data<float>()[i];
  return std::sqrt(s);
}
inline double frob_diff(const Tensor& a, const Tensor& b) {
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double e = static_cast<double>(a.data<float>()[i]) - b.data<float>()[i];
    s += e * e;
  }
  return std::sqrt(s);
}

// The scales the f32-vs-double tolerances are built from (tests/test_distill.cpp explains the
// model): per row the largest |I| (max_I; loss_scale sums 1 + 2 max_I over rows), the largest
// |x| row norm, the largest LayerNorm scale, and the gradient a ReLU kink flip could move:
// a pre-activation with |a| < 4 gamma_{D+d} |q| |k| (eps_a) may change side in f32, moving the
// gradients by <= |dL/dI[t,s]| |w[t,h]| max(|q[t,h]|, |k[s]|) max|x| J, dL/dI = softmax - p in
// the row's support (dense: s <= t; sparse: the selected set), from the double forward.
struct ErrorScales {
  double max_I = 0.0, loss_scale = 0.0, max_x = 0.0, max_gamma = 0.0, flip = 0.0;
  int64_t risky = 0;  // pre-activations within eps_a of the kink
};
inline ErrorScales error_scales(const IndexerConfig& cfg, const IndexerWeights& w, const Tensor& x, const Tensor& p,
                                const Tensor& selected, const Forward& f, double u) {
  const int64_t n = x.dim(0), D = x.dim(1), H = cfg.n_heads;
  const bool sparse = selected.defined();
  const auto gam = [u](double m) { return m * u / (1.0 - m * u); };
  ErrorScales e;
  for (int64_t t = 0; t < n; ++t) {
    double m = 0.0;
    for (int64_t s = 0; s <= t; ++s) m = std::max(m, std::abs(f.I[t * n + s]));
    e.max_I = std::max(e.max_I, m);
    e.loss_scale += 1 + 2 * m;
    double xs = 0.0;
    for (int64_t j = 0; j < D; ++j) xs += x.data<float>()[t * D + j] * x.data<float>()[t * D + j];
    e.max_x = std::max(e.max_x, std::sqrt(xs));
  }
  for (int64_t c = 0; c < cfg.head_dim; ++c) e.max_gamma = std::max(e.max_gamma, std::abs(1.0 * w.k_norm.data<float>()[c]));
  const double J = 1 + 2 * e.max_gamma * f.max_rstd;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<bool> in_s(n, !sparse);
    if (sparse)
      for (int64_t j = 0; j < selected.dim(1); ++j) {
        const int32_t v = selected.data<int32_t>()[t * selected.dim(1) + j];
        if (v >= 0 && v <= t) in_s[v] = true;
      }
    double m = -INFINITY, z = 0.0, mass = 0.0;
    for (int64_t s = 0; s <= t; ++s)
      if (in_s[s]) m = std::max(m, f.I[t * n + s]), mass += p.data<float>()[t * n + s];
    for (int64_t s = 0; s <= t; ++s) z += in_s[s] ? std::exp(f.I[t * n + s] - m) : 0.0;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s <= t; ++s) {
        const int64_t th = t * H + h;
        if (std::abs(f.a[th * n + s]) >= 4 * gam(static_cast<double>(D + cfg.head_dim)) * f.qn[th] * f.kn[s]) continue;
        ++e.risky;
        const double g =
            in_s[s] && mass > 0 ? std::abs(std::exp(f.I[t * n + s] - m) / z - p.data<float>()[t * n + s] / mass) : 0.0;
        e.flip += g * std::abs(f.w[th]) * std::max(f.qn[th], f.kn[s]) * e.max_x * J;
      }
  }
  return e;
}

// A case with a known recall: random weights and x (n x D, from `seed`), and targets where row t
// puts 0.6 on its best-scoring key and 0.4 on its worst (by the double forward), so recall@topk
// is exactly 0.6 for rows t >= topk and 1 below; `recall` is the expected mean.
struct BestWorstCase {
  IndexerWeights w;
  Tensor x, p;
  double recall = 0.0;
};
inline BestWorstCase best_worst_case(const IndexerConfig& cfg, int64_t n, int64_t D, uint32_t seed) {
  std::mt19937 gen(seed);
  BestWorstCase c{random_weights(cfg, D, gen), random_tensor({n, D}, gen, 1.0f), Tensor::zeros({n, n}, DType::F32)};
  const Forward f = forward(cfg, c.w, c.x);
  double expect = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    int64_t best = 0, worst = 0;
    for (int64_t s = 0; s <= t; ++s) {
      if (f.I[t * n + s] > f.I[t * n + best]) best = s;
      if (f.I[t * n + s] < f.I[t * n + worst]) worst = s;
    }
    c.p.data<float>()[t * n + best] += 0.6f;
    c.p.data<float>()[t * n + worst] += 0.4f;
    expect += t < cfg.topk ? 1.0 : 0.6;
  }
  c.recall = expect / static_cast<double>(n);
  return c;
}

}  // namespace ic::distill_test
