#include "indexcache/family_loss.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace ic {

namespace {

// y[n, out] = x[n, in] W^T (W F32 [out, in]) in double.
std::vector<double> linear_d(const Tensor& x, const Tensor& w) {
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  std::vector<double> y(static_cast<size_t>(n * out), 0.0);
  const float* xs = x.data<float>();
  const float* ws = w.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0.0;
      for (int64_t i = 0; i < in; ++i) s += static_cast<double>(xs[t * in + i]) * ws[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

// g[out, in] += dy[n, out]^T x[n, in], summed over t in order, rounded once into g.
void add_weight_grad(const std::vector<double>& dy, const Tensor& x, Tensor& g) {
  const int64_t n = x.dim(0), in = x.dim(1), out = g.dim(0);
  const float* xs = x.data<float>();
  float* gs = g.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double s = 0.0;
      for (int64_t t = 0; t < n; ++t) s += dy[t * out + o] * xs[t * in + i];
      gs[o * in + i] = static_cast<float>(gs[o * in + i] + s);
    }
}

void check_weight(const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  IC_CHECK(t.defined() && t.dtype() == DType::F32 && t.device() == Device::CPU,
           "family indexer loss: {} must be an F32 host tensor", name);
  if (cols < 0)
    IC_CHECK(t.rank() == 1 && t.dim(0) == rows, "family indexer loss: {} is {}, want [{}]", name, t.desc(), rows);
  else
    IC_CHECK(t.rank() == 2 && t.dim(0) == rows && t.dim(1) == cols, "family indexer loss: {} is {}, want [{}, {}]",
             name, t.desc(), rows, cols);
}

void check_all(const FamilyIndexerShape& sh, const IndexerWeights& w, const Tensor& xq, const Tensor& x,
               const IndexerRope& rope) {
  check_tensor(xq, "xq", DType::F32, Device::CPU, 2);
  check_tensor(x, "x", DType::F32, Device::CPU, 2);
  IC_CHECK(xq.dim(0) == x.dim(0) && x.dim(0) >= 1, "family indexer loss: xq {} and x {} must have the same tokens",
           xq.desc(), x.desc());
  const int64_t Hi = sh.n_heads, Di = sh.head_dim;
  IC_CHECK(Hi >= 1 && Di >= 1 && sh.topk >= 1, "family indexer loss: heads {}, head dim {}, top-k {} must be >= 1", Hi,
           Di, sh.topk);
  check_weight(w.wq, "wq", Hi * Di, xq.dim(1));
  check_weight(w.wk, "wk", Di, x.dim(1));
  check_weight(w.k_norm, "k_norm", Di, -1);
  check_weight(w.k_bias, "k_bias", Di, -1);
  check_weight(w.wproj, "wproj", Hi, x.dim(1));
  IC_CHECK(rope.dim % 2 == 0 && rope.dim <= Di, "family indexer loss: RoPE dim {} must be even and <= head dim {}",
           rope.dim, Di);
  IC_CHECK(static_cast<int64_t>(rope.cos.size()) >= x.dim(0) * rope.dim / 2,
           "family indexer loss: the RoPE table covers fewer than {} positions", x.dim(0));
}

// The forward activations of all n tokens.
struct Acts {
  int64_t n = 0, Hi = 0, Di = 0;
  std::vector<double> q;      // [n, Hi, Di] after RoPE
  std::vector<double> xhat;   // [n, Di] normalised key before the affine
  std::vector<double> rstd;   // [n]
  std::vector<double> k;      // [n, Di] after affine and RoPE
  std::vector<double> w;      // [n, Hi] scaled head weights
};

Acts forward(const FamilyIndexerShape& sh, const IndexerWeights& w, const Tensor& xq, const Tensor& x,
             const IndexerRope& rope) {
  Acts a;
  a.n = x.dim(0);
  a.Hi = sh.n_heads;
  a.Di = sh.head_dim;
  const int64_t n = a.n, Hi = a.Hi, Di = a.Di;
  a.q = linear_d(xq, w.wq);
  a.k = linear_d(x, w.wk);
  a.w = linear_d(x, w.wproj);
  a.xhat.resize(static_cast<size_t>(n * Di));
  a.rstd.resize(static_cast<size_t>(n));
  const double sc = 1.0 / std::sqrt(static_cast<double>(Hi) * static_cast<double>(Di));
  for (double& v : a.w) v *= sc;
  for (int64_t t = 0; t < n; ++t) {
    double* kr = a.k.data() + t * Di;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < Di; ++i) mean += kr[i];
    mean /= static_cast<double>(Di);
    for (int64_t i = 0; i < Di; ++i) var += (kr[i] - mean) * (kr[i] - mean);
    var /= static_cast<double>(Di);
    a.rstd[t] = 1.0 / std::sqrt(var + sh.eps);
    for (int64_t i = 0; i < Di; ++i) {
      a.xhat[t * Di + i] = (kr[i] - mean) * a.rstd[t];
      kr[i] = a.xhat[t * Di + i] * w.k_norm.data<float>()[i] + w.k_bias.data<float>()[i];
    }
    rope.apply(kr, t, false);
    for (int64_t h = 0; h < Hi; ++h) rope.apply(a.q.data() + (t * Hi + h) * Di, t, false);
  }
  return a;
}

double qk(const Acts& a, int64_t t, int64_t h, int64_t s) {
  const double* q = a.q.data() + (t * a.Hi + h) * a.Di;
  const double* k = a.k.data() + s * a.Di;
  double d = 0.0;
  for (int64_t i = 0; i < a.Di; ++i) d += q[i] * k[i];
  return d;
}

// The top-k of row I[0 .. len) (score desc, index asc).
std::vector<int64_t> topk_of(const double* I, int64_t len, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(len));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t m = std::min(k, len);
  std::partial_sort(idx.begin(), idx.begin() + m, idx.end(),
                    [&](int64_t x, int64_t y) { return I[x] > I[y] || (I[x] == I[y] && x < y); });
  idx.resize(static_cast<size_t>(m));
  return idx;
}

}  // namespace

IndexerRope IndexerRope::from_table(const dsa::RopeTable& table, MlaRope style, int64_t n) {
  IndexerRope r;
  r.dim = table.dim();
  r.half = style == MlaRope::Half;
  const int64_t half = r.dim / 2;
  r.cos.resize(static_cast<size_t>(n * half));
  r.sin.resize(static_cast<size_t>(n * half));
  for (int64_t p = 0; p < n; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = static_cast<double>(table.inv_freq()[i]) * static_cast<double>(p);
      r.cos[p * half + i] = std::cos(ang) * table.attention_factor();
      r.sin[p * half + i] = std::sin(ang) * table.attention_factor();
    }
  return r;
}

IndexerRope IndexerRope::from_base(double base, int64_t rot_dim, ops::RopeStyle style, int64_t n) {
  IC_CHECK(rot_dim >= 0 && rot_dim % 2 == 0, "indexer RoPE: rotated dims {} must be even", rot_dim);
  IndexerRope r;
  r.dim = rot_dim;
  r.half = style == ops::RopeStyle::kHalf;
  const int64_t half = rot_dim / 2;
  r.cos.resize(static_cast<size_t>(n * half));
  r.sin.resize(static_cast<size_t>(n * half));
  for (int64_t p = 0; p < n; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = static_cast<double>(p) * std::pow(base, -2.0 * static_cast<double>(i) / rot_dim);
      r.cos[p * half + i] = std::cos(ang);
      r.sin[p * half + i] = std::sin(ang);
    }
  return r;
}

// Forward: pair i takes (a, b) = x[i], x[i + half] (half) or x[2i], x[2i + 1] (interleaved) and
// writes (a c - b s) to i, (b c + a s) to i + half. Transposed: from y[i], y[i + half] back to
// the pair's slots, a = y_i c + y_{i+half} s, b = -y_i s + y_{i+half} c.
void IndexerRope::apply(double* x, int64_t pos, bool transpose) const {
  const int64_t half = dim / 2;
  const std::vector<double> in(x, x + dim);
  for (int64_t i = 0; i < half; ++i) {
    const double c = cos[pos * half + i], s = sin[pos * half + i];
    const int64_t ia = this->half ? i : 2 * i, ib = this->half ? i + half : 2 * i + 1;
    if (!transpose) {
      x[i] = in[ia] * c - in[ib] * s;
      x[i + half] = in[ib] * c + in[ia] * s;
    } else {
      x[ia] = in[i] * c + in[i + half] * s;
      x[ib] = -in[i] * s + in[i + half] * c;
    }
  }
}

IndexerWeights zeros_like(const IndexerWeights& w) {
  IndexerWeights z;
  z.wq = Tensor::zeros(w.wq.shape(), DType::F32);
  z.wk = Tensor::zeros(w.wk.shape(), DType::F32);
  z.k_norm = Tensor::zeros(w.k_norm.shape(), DType::F32);
  z.k_bias = Tensor::zeros(w.k_bias.shape(), DType::F32);
  z.wproj = Tensor::zeros(w.wproj.shape(), DType::F32);
  return z;
}

std::vector<double> family_indexer_scores(const FamilyIndexerShape& sh, const IndexerWeights& w, const Tensor& xq,
                                          const Tensor& x, const IndexerRope& rope) {
  check_all(sh, w, xq, x, rope);
  const Acts a = forward(sh, w, xq, x, rope);
  const int64_t n = a.n;
  std::vector<double> I(static_cast<size_t>(n * n), -INFINITY);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s) {
      double v = 0.0;
      for (int64_t h = 0; h < a.Hi; ++h) v += a.w[t * a.Hi + h] * std::max(0.0, qk(a, t, h, s));
      I[t * n + s] = v;
    }
  return I;
}

DistillStats family_indexer_loss(const FamilyIndexerShape& sh, const IndexerWeights& w, const FamilyLossInput& in,
                                 IndexerWeights* grad) {
  IC_CHECK(in.rope && in.targets, "family indexer loss: no RoPE table or no targets");
  check_all(sh, w, in.xq, in.x, *in.rope);
  IC_CHECK(in.chunk >= 1, "family indexer loss: chunk {} must be >= 1", in.chunk);
  const Acts a = forward(sh, w, in.xq, in.x, *in.rope);
  const int64_t n = a.n, Hi = a.Hi, Di = a.Di;
  std::vector<double> dq(grad ? static_cast<size_t>(n * Hi * Di) : 0, 0.0), dk(grad ? static_cast<size_t>(n * Di) : 0, 0.0),
      dw(grad ? static_cast<size_t>(n * Hi) : 0, 0.0);
  std::vector<float> p(static_cast<size_t>(std::min(in.chunk, n) * n));
  std::vector<double> act(static_cast<size_t>(Hi * n)), I(static_cast<size_t>(n)), r(static_cast<size_t>(n)),
      g(static_cast<size_t>(n));
  DistillStats st;
  for (int64_t t0 = 0; t0 < n; t0 += in.chunk) {
    const int64_t t1 = std::min(n, t0 + in.chunk);
    in.targets(t0, t1, p.data());
    for (int64_t t = t0; t < t1; ++t) {
      const float* pt = p.data() + (t - t0) * n;
      double P = 0.0;
      for (int64_t s = 0; s <= t; ++s) {
        IC_CHECK(std::isfinite(pt[s]) && pt[s] >= 0.0f, "family indexer loss: target p[{}, {}] = {} is not a probability",
                 t, s, pt[s]);
        P += pt[s];
      }
      if (!(P > 0.0)) continue;
      double m = -INFINITY;
      for (int64_t s = 0; s <= t; ++s) {
        double v = 0.0;
        for (int64_t h = 0; h < Hi; ++h) v += a.w[t * Hi + h] * std::max(0.0, act[h * n + s] = qk(a, t, h, s));
        I[s] = v;
        m = std::max(m, v);
      }
      double z = 0.0;
      for (int64_t s = 0; s <= t; ++s) z += std::exp(I[s] - m);
      const double lse = m + std::log(z);
      double kl = 0.0;
      for (int64_t s = 0; s <= t; ++s) {
        r[s] = pt[s] / P;
        if (r[s] > 0.0) kl += r[s] * (std::log(r[s]) - (I[s] - lse));
        g[s] = std::exp(I[s] - lse) - r[s];
      }
      st.loss += kl;
      ++st.rows;
      for (int64_t s : topk_of(I.data(), t + 1, sh.topk)) st.recall_sum += r[s];
      if (!grad) continue;
      for (int64_t h = 0; h < Hi; ++h) {
        const double wt = a.w[t * Hi + h];
        double dwh = 0.0;
        double* dqt = dq.data() + (t * Hi + h) * Di;
        const double* qt = a.q.data() + (t * Hi + h) * Di;
        for (int64_t s = 0; s <= t; ++s) {
          const double av = act[h * n + s];
          if (av <= 0.0) continue;
          dwh += g[s] * av;
          const double b = g[s] * wt;
          const double* ks = a.k.data() + s * Di;
          double* dks = dk.data() + s * Di;
          for (int64_t i = 0; i < Di; ++i) {
            dqt[i] += b * ks[i];
            dks[i] += b * qt[i];
          }
        }
        dw[t * Hi + h] += dwh;
      }
    }
  }
  if (!grad) return st;
  // Back through the projections, RoPE and the key LayerNorm.
  const double sc = 1.0 / std::sqrt(static_cast<double>(Hi) * static_cast<double>(Di));
  for (double& v : dw) v *= sc;
  std::vector<double> dkraw(static_cast<size_t>(n * Di));
  std::vector<double> dgam(static_cast<size_t>(Di), 0.0), dbet(static_cast<size_t>(Di), 0.0);
  const float* gam = w.k_norm.data<float>();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < Hi; ++h) in.rope->apply(dq.data() + (t * Hi + h) * Di, t, true);
    double* dkn = dk.data() + t * Di;
    in.rope->apply(dkn, t, true);
    const double* xh = a.xhat.data() + t * Di;
    double m1 = 0.0, m2 = 0.0;
    for (int64_t i = 0; i < Di; ++i) {
      dgam[i] += dkn[i] * xh[i];
      dbet[i] += dkn[i];
      const double dx = dkn[i] * gam[i];
      m1 += dx;
      m2 += dx * xh[i];
    }
    m1 /= static_cast<double>(Di);
    m2 /= static_cast<double>(Di);
    for (int64_t i = 0; i < Di; ++i) dkraw[t * Di + i] = a.rstd[t] * (dkn[i] * gam[i] - m1 - xh[i] * m2);
  }
  add_weight_grad(dq, in.xq, grad->wq);
  add_weight_grad(dkraw, in.x, grad->wk);
  add_weight_grad(dw, in.x, grad->wproj);
  for (int64_t i = 0; i < Di; ++i) {
    grad->k_norm.data<float>()[i] = static_cast<float>(grad->k_norm.data<float>()[i] + dgam[i]);
    grad->k_bias.data<float>()[i] = static_cast<float>(grad->k_bias.data<float>()[i] + dbet[i]);
  }
  return st;
}

}  // namespace ic
