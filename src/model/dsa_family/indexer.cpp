#include "model/dsa_family/indexer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "model/dsa_family/cpu_math.h"
#include "ops/indexer.h"

namespace ic::dsa {

namespace {
constexpr double kKeyNormEps = 1e-6;  // nn.LayerNorm(head_dim, eps=1e-6) in HF's indexer
}

IndexerActs indexer_project(const MlaMoeConfig& c, const RopeTable& rope, const IndexerWeights& w, const Tensor& x,
                            const Tensor& q_latent, int64_t p0) {
  IC_ASSERT(w.loaded() && q_latent.defined());
  const int64_t n = x.dim(0), Hi = c.index_n_heads, Di = c.index_head_dim;
  IndexerActs a;
  a.q = linear(q_latent, w.wq_b).reshape({n, Hi, Di});
  a.k = linear(x, w.wk);
  layer_norm(a.k.data<float>(), n, Di, w.k_norm, w.k_bias, kKeyNormEps);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < Hi; ++h) rope.apply(a.q.data<float>() + (t * Hi + h) * Di, p0 + t, c.index_rope);
    rope.apply(a.k.data<float>() + t * Di, p0 + t, c.index_rope);
  }
  a.w = linear(x, w.weights_proj);
  const double scale = 1.0 / std::sqrt(static_cast<double>(Hi) * static_cast<double>(Di));
  for (int64_t i = 0; i < n * Hi; ++i) a.w.data<float>()[i] = static_cast<float>(a.w.data<float>()[i] * scale);
  return a;
}

Tensor indexer_select(const IndexerActs& a, const Tensor& keys, int64_t p0, int64_t topk) {
  Tensor out = Tensor::empty({a.q.dim(0), topk}, DType::I32);
  ops::indexer_topk(a.q, keys.slice_rows(0, p0 + a.q.dim(0)), Tensor(), a.w, p0, out);
  return out;
}

Tensor indexer_scores(const IndexerActs& a, const Tensor& keys, int64_t p0) {
  const int64_t n = a.q.dim(0);
  Tensor out = Tensor::empty({n, p0 + n}, DType::F32);
  ops::indexer_scores(a.q, keys.slice_rows(0, p0 + n), Tensor(), a.w, p0, out);
  // Past-the-row entries as -inf whatever the op leaves there (it documents -inf, taps rely on it).
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = p0 + t + 1; s < p0 + n; ++s) out.data<float>()[t * (p0 + n) + s] = -INFINITY;
  return out;
}

namespace {

// y[n, out] = x W^T in double from f32 inputs.
std::vector<double> linear_d(const double* x, int64_t n, int64_t in, const Tensor& w) {
  const int64_t out = w.dim(0);
  std::vector<double> y(static_cast<size_t>(n * out), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0.0;
      for (int64_t i = 0; i < in; ++i) s += x[t * in + i] * w.data<float>()[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

void rope_d(double* x, int64_t dim, int64_t pos, const RopeTable& rope, MlaRope style) {
  const int64_t half = dim / 2;
  const std::vector<double> in(x, x + dim);
  for (int64_t i = 0; i < half; ++i) {
    const double ang = static_cast<double>(rope.inv_freq()[i]) * static_cast<double>(pos);
    const double c = std::cos(ang) * rope.attention_factor(), s = std::sin(ang) * rope.attention_factor();
    const double a = style == MlaRope::Half ? in[i] : in[2 * i];
    const double b = style == MlaRope::Half ? in[i + half] : in[2 * i + 1];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace

std::vector<double> indexer_scores_reference(const MlaMoeConfig& c, const RopeTable& rope, const IndexerWeights& w,
                                             const Tensor& x, const Tensor& q_latent) {
  const int64_t n = x.dim(0), D = c.hidden, Hi = c.index_n_heads, Di = c.index_head_dim, R = c.qk_rope_dim;
  std::vector<double> xd(x.data<float>(), x.data<float>() + n * D);
  std::vector<double> qld(q_latent.data<float>(), q_latent.data<float>() + n * c.q_lora_rank);
  std::vector<double> q = linear_d(qld.data(), n, c.q_lora_rank, w.wq_b);  // [n, Hi, Di]
  std::vector<double> k = linear_d(xd.data(), n, D, w.wk);                 // [n, Di]
  const std::vector<double> wp = linear_d(xd.data(), n, D, w.weights_proj);
  for (int64_t t = 0; t < n; ++t) {
    double* kr = k.data() + t * Di;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < Di; ++i) mean += kr[i];
    mean /= static_cast<double>(Di);
    for (int64_t i = 0; i < Di; ++i) var += (kr[i] - mean) * (kr[i] - mean);
    var /= static_cast<double>(Di);
    for (int64_t i = 0; i < Di; ++i)
      kr[i] = (kr[i] - mean) / std::sqrt(var + kKeyNormEps) * w.k_norm.data<float>()[i] + w.k_bias.data<float>()[i];
    rope_d(kr, R, t, rope, c.index_rope);
    for (int64_t h = 0; h < Hi; ++h) rope_d(q.data() + (t * Hi + h) * Di, R, t, rope, c.index_rope);
  }
  std::vector<double> scores(static_cast<size_t>(n * n), -std::numeric_limits<double>::infinity());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s) {
      double sum = 0.0;
      for (int64_t h = 0; h < Hi; ++h) {
        double qk = 0.0;
        for (int64_t i = 0; i < Di; ++i) qk += q[(t * Hi + h) * Di + i] * k[s * Di + i];
        sum += wp[t * Hi + h] / std::sqrt(static_cast<double>(Hi)) * std::max(0.0, qk / std::sqrt(static_cast<double>(Di)));
      }
      scores[t * n + s] = sum;
    }
  return scores;
}

std::vector<int32_t> topk_reference(const std::vector<double>& scores, int64_t n, int64_t T, int64_t p0, int64_t k) {
  std::vector<int32_t> out(static_cast<size_t>(n * k), -1);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t len = p0 + t + 1;
    std::vector<int32_t> idx(static_cast<size_t>(len));
    std::iota(idx.begin(), idx.end(), 0);
    const double* row = scores.data() + t * T;
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    for (int64_t j = 0; j < std::min(k, len); ++j) out[t * k + j] = idx[j];
  }
  return out;
}

}  // namespace ic::dsa
