#include "model/indexer.h"

#include <cmath>
#include <algorithm>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/layer_norm.h"
#include "ops/matmul_f32.h"

namespace ic {

namespace {
// Rotate the leading rot dims of each of `heads` rows of width hd at position t (reference).
void rope_rows(std::vector<double>& x, int64_t t, int64_t heads, int64_t hd, int64_t rot, double base,
               ops::RopeStyle style) {
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < rot / 2; ++i) {
      const double angle = t * std::pow(base, -2.0 * i / rot);
      const int64_t a = style == ops::RopeStyle::kAdjacent ? 2 * i : i;
      const int64_t b = style == ops::RopeStyle::kAdjacent ? 2 * i + 1 : i + rot / 2;
      double* v = &x[h * hd];
      const double xa = v[a], xb = v[b];
      v[a] = xa * std::cos(angle) - xb * std::sin(angle);
      v[b] = xa * std::sin(angle) + xb * std::cos(angle);
    }
}

}  // namespace

float IndexerConfig::weight_scale() const {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(n_heads) * static_cast<double>(head_dim)));
}

void IndexerConfig::validate(int64_t model_dim) const {
  IC_CHECK(n_heads >= 1 && n_heads <= 128, "indexer n_heads {} outside [1, 128]", n_heads);
  IC_CHECK(head_dim >= 8 && head_dim <= 256 && head_dim % 8 == 0, "indexer head_dim {} must be a multiple of 8 in [8, 256]",
           head_dim);
  IC_CHECK(rope_dim >= 0 && rope_dim <= head_dim && rope_dim % 2 == 0,
           "indexer rope_dim {} must be even and at most head_dim {}", rope_dim, head_dim);
  IC_CHECK(topk >= 1, "indexer top-k must be >= 1, got {}", topk);
  IC_CHECK(model_dim > 0, "model width must be positive, got {}", model_dim);
  IC_CHECK(norm_eps > 0.0f, "indexer LayerNorm eps must be positive, got {}", norm_eps);
}

IndexerWeights IndexerWeights::zeros(const IndexerConfig& cfg, int64_t dim) {
  cfg.validate(dim);
  IndexerWeights w;
  w.wq = Tensor::zeros({cfg.n_heads * cfg.head_dim, dim}, DType::F32);
  w.wk = Tensor::zeros({cfg.head_dim, dim}, DType::F32);
  w.k_norm = Tensor::zeros({cfg.head_dim}, DType::F32);
  w.k_bias = Tensor::zeros({cfg.head_dim}, DType::F32);
  w.wproj = Tensor::zeros({cfg.n_heads, dim}, DType::F32);
  return w;
}

IndexerWeights IndexerWeights::random(const IndexerConfig& cfg, int64_t dim, uint64_t seed) {
  IndexerWeights w = zeros(cfg, dim);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim))));
  for (Tensor* t : {&w.wq, &w.wk, &w.wproj})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = nd(rng);
  for (int64_t i = 0; i < cfg.head_dim; ++i) w.k_norm.data<float>()[i] = 1.0f;
  return w;
}

void IndexerWeights::check(const IndexerConfig& cfg, int64_t dim) const {
  const auto expect = [](const Tensor& t, const char* name, Shape s) {
    IC_CHECK(t.defined() && t.dtype() == DType::F32 && t.shape() == s, "indexer weight {}: expected F32{} but got {}",
             name, s.str(), t.defined() ? t.desc() : std::string("nothing"));
  };
  expect(wq, "wq", {cfg.n_heads * cfg.head_dim, dim});
  expect(wk, "wk", {cfg.head_dim, dim});
  expect(k_norm, "k_norm", {cfg.head_dim});
  expect(k_bias, "k_bias", {cfg.head_dim});
  expect(wproj, "wproj", {cfg.n_heads, dim});
}

IndexerActivations indexer_project(const IndexerConfig& cfg, const IndexerWeights& weights, const Tensor& x,
                                   const Tensor& pos) {
  IC_CHECK(x.device() == Device::CPU, "indexer_project: the indexer runs on the CPU only for now, got {}", x.desc());
  const int64_t n = x.dim(0), dim = x.dim(1), H = cfg.n_heads, d = cfg.head_dim;
  weights.check(cfg, dim);
  IndexerActivations a;
  a.q = Tensor::empty({n, H, d}, DType::F32);
  a.k = Tensor::empty({n, d}, DType::F32);
  a.w = Tensor::empty({n, H}, DType::F32);
  Tensor q2 = a.q.reshape({n, H * d});
  ops::matmul_f32(x, weights.wq, q2);
  ops::matmul_f32(x, weights.wk, a.k);
  ops::matmul_f32(x, weights.wproj, a.w);
  const float scale = cfg.weight_scale();
  for (int64_t i = 0; i < n * H; ++i) a.w.data<float>()[i] *= scale;
  // LayerNorm of each key over head_dim, in double: d is small and the key feeds every score.
  ops::layer_norm(a.k, weights.k_norm, weights.k_bias, cfg.norm_eps, a.k);
  if (cfg.rope_dim > 0) {
    ops::rope(a.q, pos, cfg.rope_dim, cfg.rope_base, cfg.rope_style);
    Tensor k3 = a.k.reshape({n, 1, d});
    ops::rope(k3, pos, cfg.rope_dim, cfg.rope_base, cfg.rope_style);
  }
  return a;
}

IndexerRunWeights IndexerRunWeights::upload(const IndexerConfig& cfg, const IndexerWeights& w, Device device) {
  // On the CPU LinearWeight quantises to int8, too coarse for a selection; the CPU runs the
  // f32 master weights (the IndexerWeights overload of indexer_project) instead.
  IC_CHECK(device == Device::CUDA, "IndexerRunWeights: for the GPU only; the CPU uses the master weights");
  const int64_t dim = w.wq.dim(1);
  w.check(cfg, dim);
  IndexerRunWeights r;
  r.wq = ops::LinearWeight::load(DType::F32, w.wq.data<float>(), cfg.n_heads * cfg.head_dim, dim, device);
  r.wk = ops::LinearWeight::load(DType::F32, w.wk.data<float>(), cfg.head_dim, dim, device);
  std::vector<float> proj(w.wproj.data<float>(), w.wproj.data<float>() + w.wproj.numel());
  for (float& v : proj) v *= cfg.weight_scale();
  r.wproj_scaled = ops::LinearWeight::load(DType::F32, proj.data(), cfg.n_heads, dim, device);
  r.k_norm = device == Device::CPU ? w.k_norm : w.k_norm.to(device);
  r.k_bias = device == Device::CPU ? w.k_bias : w.k_bias.to(device);
  return r;
}

IndexerActivations indexer_project(const IndexerConfig& cfg, const IndexerRunWeights& weights, const Tensor& x,
                                   const Tensor& pos) {
  const Device dev = x.device();
  const int64_t n = x.dim(0), H = cfg.n_heads, d = cfg.head_dim;
  IndexerActivations a;
  a.q = Tensor::empty({n, H, d}, DType::F32, dev);
  a.k = Tensor::empty({n, d}, DType::F32, dev);
  a.w = Tensor::empty({n, H}, DType::F32, dev);
  Tensor q2 = a.q.reshape({n, H * d});
  ops::linear(weights.wq, x, q2);
  ops::linear(weights.wk, x, a.k);
  ops::linear(weights.wproj_scaled, x, a.w);
  ops::layer_norm(a.k, weights.k_norm, weights.k_bias, cfg.norm_eps, a.k);
  if (cfg.rope_dim > 0) {
    ops::rope(a.q, pos, cfg.rope_dim, cfg.rope_base, cfg.rope_style);
    Tensor k3 = a.k.reshape({n, 1, d});
    ops::rope(k3, pos, cfg.rope_dim, cfg.rope_base, cfg.rope_style);
  }
  return a;
}

std::vector<int32_t> indexer_topk_reference(const IndexerConfig& c, const IndexerWeights& W, const float* h, int64_t n,
                                            int64_t dim) {
  const int64_t H = c.n_heads, d = c.head_dim;
  auto project = [&](const Tensor& w, int64_t rows, int64_t t) {
    std::vector<double> y(static_cast<size_t>(rows));
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < dim; ++i) y[o] += static_cast<double>(h[t * dim + i]) * w.data<float>()[o * dim + i];
    return y;
  };
  std::vector<std::vector<double>> q(n), k(n), w(n);
  for (int64_t t = 0; t < n; ++t) {
    q[t] = project(W.wq, H * d, t);
    rope_rows(q[t], t, H, d, c.rope_dim, c.rope_base, c.rope_style);
    k[t] = project(W.wk, d, t);
    double mean = 0, var = 0;
    for (double v : k[t]) mean += v / d;
    for (double v : k[t]) var += (v - mean) * (v - mean) / d;
    for (int64_t j = 0; j < d; ++j)
      k[t][j] = (k[t][j] - mean) / std::sqrt(var + c.norm_eps) * W.k_norm.data<float>()[j] + W.k_bias.data<float>()[j];
    rope_rows(k[t], t, 1, d, c.rope_dim, c.rope_base, c.rope_style);
    w[t] = project(W.wproj, H, t);
    for (double& v : w[t]) v *= c.weight_scale();
  }
  std::vector<int32_t> topk(static_cast<size_t>(n * c.topk), -1);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<std::pair<double, int32_t>> row;
    for (int64_t s = 0; s <= t; ++s) {
      double score = 0;
      for (int64_t hh = 0; hh < H; ++hh) {
        double dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += q[t][hh * d + j] * k[s][j];
        score += w[t][hh] * std::max(dot, 0.0);
      }
      row.push_back({-score, static_cast<int32_t>(s)});
    }
    std::sort(row.begin(), row.end());
    for (int64_t i = 0; i < std::min<int64_t>(c.topk, t + 1); ++i) topk[t * c.topk + i] = row[i].second;
  }
  return topk;
}

}  // namespace ic
