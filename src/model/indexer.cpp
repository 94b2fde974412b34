#include "model/indexer.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace ic {

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

}  // namespace ic
