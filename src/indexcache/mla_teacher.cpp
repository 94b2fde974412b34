#include "indexcache/mla_teacher.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace ic {

namespace {

void check_input(const MlaTeacherInput& in, int64_t t0, int64_t t1) {
  check_tensor(in.qa, "MLA teacher qa", DType::F32, Device::CPU, 3);
  check_tensor(in.kv, "MLA teacher kv", DType::F32, Device::CPU, 2);
  IC_CHECK(in.qa.dim(0) == in.kv.dim(0) && in.qa.dim(2) == in.kv.dim(1),
           "MLA teacher: qa {} and kv {} disagree (want [n, H, d] and [n, d])", in.qa.desc(), in.kv.desc());
  IC_CHECK(0 <= t0 && t0 <= t1 && t1 <= in.kv.dim(0), "MLA teacher: rows [{}, {}) outside [0, {})", t0, t1,
           in.kv.dim(0));
}

// p[t, 0 .. t] of one row into out (n floats; zeros past t). sc: H * n doubles of scratch.
void target_row(const MlaTeacherInput& in, double scale, int64_t t, float* out, std::vector<double>& sc) {
  const int64_t n = in.kv.dim(0), H = in.qa.dim(1), d = in.qa.dim(2);
  const float* kv = in.kv.data<float>();
  std::vector<double> acc(static_cast<size_t>(t + 1), 0.0);
  for (int64_t h = 0; h < H; ++h) {
    const float* q = in.qa.data<float>() + (t * H + h) * d;
    double m = -INFINITY;
    for (int64_t s = 0; s <= t; ++s) {
      double dot = 0.0;
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(q[j]) * kv[s * d + j];
      sc[s] = scale * dot;
      m = std::max(m, sc[s]);
    }
    double z = 0.0;
    for (int64_t s = 0; s <= t; ++s) z += (sc[s] = std::exp(sc[s] - m));
    for (int64_t s = 0; s <= t; ++s) acc[s] += sc[s] / z;
  }
  for (int64_t s = 0; s < n; ++s) out[s] = s <= t ? static_cast<float>(acc[s] / static_cast<double>(H)) : 0.0f;
}

}  // namespace

Tensor mla_absorbed_query(const MlaMoeConfig& c, const dsa::MlaWeights& w, const Tensor& q) {
  const int64_t H = c.n_heads, nope = c.qk_nope_dim, rope = c.qk_rope_dim, v = c.v_head_dim, L = c.kv_lora_rank;
  check_tensor(q, "MLA teacher q", DType::F32, Device::CPU, 3);
  IC_CHECK(q.dim(1) == H && q.dim(2) == nope + rope, "MLA teacher: q {} is not [n, {}, {}]", q.desc(), H, nope + rope);
  IC_CHECK(w.kv_b.defined() && w.kv_b.dim(0) == H * (nope + v) && w.kv_b.dim(1) == L,
           "MLA teacher: kv_b_proj is not [{}, {}]", H * (nope + v), L);
  const int64_t n = q.dim(0), d = L + rope;
  Tensor qa = Tensor::empty({n, H, d}, DType::F32);
  const float* kvb = w.kv_b.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float* qt = q.data<float>() + (t * H + h) * (nope + rope);
      float* o = qa.data<float>() + (t * H + h) * d;
      for (int64_t j = 0; j < L; ++j) {
        double acc = 0.0;
        for (int64_t i = 0; i < nope; ++i) acc += static_cast<double>(qt[i]) * kvb[(h * (nope + v) + i) * L + j];
        o[j] = static_cast<float>(acc);
      }
      for (int64_t j = 0; j < rope; ++j) o[L + j] = qt[nope + j];
    }
  return qa;
}

void mla_target_rows(const MlaTeacherInput& in, double scale, int64_t t0, int64_t t1, float* out) {
  check_input(in, t0, t1);
  const int64_t n = in.kv.dim(0);
#pragma omp parallel
  {
    std::vector<double> sc(static_cast<size_t>(n));
#pragma omp for schedule(dynamic)
    for (int64_t t = t0; t < t1; ++t) target_row(in, scale, t, out + (t - t0) * n, sc);
  }
}

void mean_target_rows(std::span<const MlaTeacherInput> layers, double scale, int64_t t0, int64_t t1, float* out) {
  IC_CHECK(!layers.empty(), "MLA teacher: mean of no layers' targets");
  const int64_t n = layers[0].kv.dim(0), R = t1 - t0;
  for (const MlaTeacherInput& l : layers)
    IC_CHECK(l.kv.dim(0) == n, "MLA teacher: layers of {} and {} tokens in one mean", n, l.kv.dim(0));
  if (layers.size() == 1) return mla_target_rows(layers[0], scale, t0, t1, out);
  std::vector<double> sum(static_cast<size_t>(R * n), 0.0);
  std::vector<float> rows(static_cast<size_t>(R * n));
  for (const MlaTeacherInput& l : layers) {
    mla_target_rows(l, scale, t0, t1, rows.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += rows[i];
  }
  const double m = static_cast<double>(layers.size());
  for (size_t i = 0; i < sum.size(); ++i) out[i] = static_cast<float>(sum[i] / m);
}

Tensor mla_targets_reference(const MlaMoeConfig& c, const dsa::MlaWeights& w, const Tensor& q, const Tensor& kv) {
  const int64_t H = c.n_heads, nope = c.qk_nope_dim, rope = c.qk_rope_dim, v = c.v_head_dim, L = c.kv_lora_rank;
  const int64_t n = q.dim(0);
  const float* kvb = w.kv_b.data<float>();
  const double scale = c.softmax_scale();
  Tensor p = Tensor::zeros({n, n}, DType::F32);
  std::vector<double> acc(static_cast<size_t>(n * n), 0.0);
  for (int64_t h = 0; h < H; ++h) {
    // k[s] = [W_uk[h] latent[s], kr[s]]
    std::vector<double> k(static_cast<size_t>(n * (nope + rope)));
    for (int64_t s = 0; s < n; ++s) {
      const float* row = kv.data<float>() + s * (L + rope);
      for (int64_t i = 0; i < nope; ++i) {
        double a = 0.0;
        for (int64_t j = 0; j < L; ++j) a += static_cast<double>(kvb[(h * (nope + v) + i) * L + j]) * row[j];
        k[s * (nope + rope) + i] = a;
      }
      for (int64_t j = 0; j < rope; ++j) k[s * (nope + rope) + nope + j] = row[L + j];
    }
    for (int64_t t = 0; t < n; ++t) {
      const float* qt = q.data<float>() + (t * H + h) * (nope + rope);
      std::vector<double> e(static_cast<size_t>(t + 1));
      double m = -INFINITY, z = 0.0;
      for (int64_t s = 0; s <= t; ++s) {
        double dot = 0.0;
        for (int64_t i = 0; i < nope + rope; ++i) dot += static_cast<double>(qt[i]) * k[s * (nope + rope) + i];
        e[s] = scale * dot;
        m = std::max(m, e[s]);
      }
      for (int64_t s = 0; s <= t; ++s) z += (e[s] = std::exp(e[s] - m));
      for (int64_t s = 0; s <= t; ++s) acc[t * n + s] += e[s] / z / static_cast<double>(H);
    }
  }
  for (int64_t i = 0; i < n * n; ++i) p.data<float>()[i] = static_cast<float>(acc[i]);
  return p;
}

}  // namespace ic
