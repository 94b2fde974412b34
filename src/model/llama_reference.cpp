// The plain reference forward: every formula written out once, with no caching, tiling or
// threading, so it can be read against the paper and the fast path can be tested against it.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/llama.h"

namespace ic {

namespace {
using Mat = std::vector<float>;  // row-major

Mat dequantized(const ops::LinearWeight& w) {
  if (w.device() != Device::CPU) {  // one copy of the whole matrix, not one per row
    const Tensor host = w.dense().to(Device::CPU);
    return Mat(host.data<float>(), host.data<float>() + host.numel());
  }
  Mat m(static_cast<size_t>(w.n_out() * w.n_in()));
  for (int64_t o = 0; o < w.n_out(); ++o) w.dequantize_row(o, m.data() + o * w.n_in());
  return m;
}

// y [n, n_out] = x [n, n_in] @ W^T, double accumulation.
Mat matmul(const Mat& x, const ops::LinearWeight& w, int64_t n) {
  const Mat W = dequantized(w);
  Mat y(static_cast<size_t>(n * w.n_out()));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < w.n_out(); ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < w.n_in(); ++i) acc += static_cast<double>(x[t * w.n_in() + i]) * W[o * w.n_in() + i];
      y[t * w.n_out() + o] = static_cast<float>(acc);
    }
  return y;
}

Mat rms_norm(const Mat& x, const Tensor& weight, int64_t n, int64_t d, float eps) {
  const Tensor w = weight.to(Device::CPU);
  Mat y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[t * d + j]) * x[t * d + j];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t j = 0; j < d; ++j) y[t * d + j] = static_cast<float>(x[t * d + j] * inv * w.data<float>()[j]);
  }
  return y;
}

// Rotate pairs of each head at position t (pairs as the config's RoPE style defines them).
void rope(Mat& x, int64_t n, int64_t heads, int64_t hd, const LlamaConfig& c) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = t * std::pow(static_cast<double>(c.rope_base), -2.0 * i / hd);
        const int64_t a = c.rope_style == ops::RopeStyle::kAdjacent ? 2 * i : i;
        const int64_t b = c.rope_style == ops::RopeStyle::kAdjacent ? 2 * i + 1 : i + hd / 2;
        float* v = &x[(t * heads + h) * hd];
        const double xa = v[a], xb = v[b];
        v[a] = static_cast<float>(xa * std::cos(angle) - xb * std::sin(angle));
        v[b] = static_cast<float>(xa * std::sin(angle) + xb * std::cos(angle));
      }
}
}  // namespace

Tensor llama_reference_forward(const LlamaModel& model, std::span<const int32_t> tokens) {
  const LlamaConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  const Tensor e = model.embed(tokens);
  Mat x(e.data<float>(), e.data<float>() + n * c.dim);
  std::vector<int32_t> topk;  // DSA: [n, k] of the last F layer
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LlamaLayer& L = model.layer(l);
    Mat h = rms_norm(x, L.attn_norm, n, c.dim, c.norm_eps);
    Mat q = matmul(h, L.wq, n), k = matmul(h, L.wk, n), v = matmul(h, L.wv, n);
    rope(q, n, c.n_heads, hd, c);
    rope(k, n, c.n_kv_heads, hd, c);
    // DSA: attention only over the selected keys; S layers keep the last F layer's selection.
    if (model.dsa() && model.dsa()->pattern.is_full(l))
      topk = indexer_topk_reference(model.dsa()->config, model.dsa()->indexers[l], h.data(), n, c.dim);
    Mat att(static_cast<size_t>(n * c.dim));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hh = 0; hh < c.n_heads; ++hh) {
        const int64_t g = hh / group;
        std::vector<double> s(static_cast<size_t>(t + 1));
        std::vector<bool> selected(static_cast<size_t>(t + 1), !model.dsa());
        if (model.dsa())
          for (int64_t i = 0; i < model.dsa()->config.topk; ++i)
            if (topk[t * model.dsa()->config.topk + i] >= 0) selected[topk[t * model.dsa()->config.topk + i]] = true;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j <= t; ++j) {
          if (!selected[j]) {
            s[j] = -INFINITY;
            continue;
          }
          double acc = 0.0;
          for (int64_t d = 0; d < hd; ++d)
            acc += static_cast<double>(q[(t * c.n_heads + hh) * hd + d]) * k[(j * c.n_kv_heads + g) * hd + d];
          s[j] = acc / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j <= t; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j <= t; ++j) acc += s[j] * v[(j * c.n_kv_heads + g) * hd + d];
          att[(t * c.n_heads + hh) * hd + d] = static_cast<float>(acc / sum);
        }
      }
    const Mat o = matmul(att, L.wo, n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = rms_norm(x, L.ffn_norm, n, c.dim, c.norm_eps);
    Mat gate = matmul(h, L.w_gate, n);
    const Mat up = matmul(h, L.w_up, n);
    for (size_t i = 0; i < gate.size(); ++i) {
      const double g = gate[i];
      gate[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
    }
    const Mat down = matmul(gate, L.w_down, n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  const Mat hn = rms_norm(x, model.output_norm(), n, c.dim, c.norm_eps);
  const Mat logits = matmul(hn, model.output(), n);
  Tensor out = Tensor::empty({n, c.vocab}, DType::F32);
  std::copy(logits.begin(), logits.end(), out.data<float>());
  return out;
}

}  // namespace ic
