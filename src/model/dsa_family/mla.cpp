#include "model/dsa_family/mla.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "model/dsa_family/cpu_math.h"

namespace ic::dsa {

namespace {

constexpr double kLoraNormEps = 1e-6;  // HF builds q_a_layernorm and kv_a_layernorm with its default eps

// The keys query t attends over: the valid entries of its selection row, or all of 0 .. p0 + t.
std::vector<int64_t> keys_of(const MlaAttendArgs& a, int64_t t) {
  const int64_t last = a.p0 + t;
  std::vector<int64_t> keys;
  if (!a.selection) {
    keys.resize(static_cast<size_t>(last + 1));
    for (int64_t s = 0; s <= last; ++s) keys[s] = s;
    return keys;
  }
  const int64_t k = a.selection->dim(1);
  const int32_t* row = a.selection->data<int32_t>() + t * k;
  for (int64_t j = 0; j < k; ++j) {
    if (row[j] >= 0) keys.push_back(row[j]);  // checked by check_selection
  }
  return keys;
}

// Before the parallel loops (an exception must not leave an OpenMP region).
void check_selection(const Tensor& sel, int64_t p0) {
  const int64_t n = sel.dim(0), k = sel.dim(1);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = sel.data<int32_t>()[t * k + j];
      IC_CHECK(s >= -1 && s <= p0 + t, "MLA: the query at position {} selects key {}, outside [-1, {}]", p0 + t, s,
               p0 + t);
    }
}

// softmax in place over `s` (double); returns false when empty.
bool softmax(std::vector<double>& s) {
  if (s.empty()) return false;
  const double m = *std::max_element(s.begin(), s.end());
  double z = 0.0;
  for (double& v : s) z += (v = std::exp(v - m));
  for (double& v : s) v /= z;
  return true;
}

void attend_absorbed(const MlaMoeConfig& c, const MlaWeights& w, const MlaAttendArgs& a, Tensor& out) {
  const int64_t n = a.q->dim(0), H = c.n_heads, nope = c.qk_nope_dim, rope = c.qk_rope_dim, v = c.v_head_dim;
  const int64_t L = c.kv_lora_rank, row = L + rope, qk = nope + rope;
  const float* kvb = w.kv_b.data<float>();  // [H * (nope + v), L]
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float* q = a.q->data<float>() + (t * H + h) * qk;
      const float* uk = kvb + h * (nope + v) * L;  // [nope, L]
      const float* uv = uk + nope * L;             // [v, L]
      std::vector<double> q_abs(static_cast<size_t>(L), 0.0);
      for (int64_t j = 0; j < nope; ++j)
        for (int64_t i = 0; i < L; ++i) q_abs[i] += static_cast<double>(q[j]) * uk[j * L + i];
      const std::vector<int64_t> keys = keys_of(a, t);
      std::vector<double> p(keys.size());
      for (size_t j = 0; j < keys.size(); ++j) {
        const float* kv = a.kv + keys[j] * row;
        double s = 0.0;
        for (int64_t i = 0; i < L; ++i) s += q_abs[i] * kv[i];
        for (int64_t i = 0; i < rope; ++i) s += static_cast<double>(q[nope + i]) * kv[L + i];
        p[j] = a.scale * s;
      }
      float* o = out.data<float>() + (t * H + h) * v;
      if (!softmax(p)) {
        std::fill(o, o + v, 0.0f);
        continue;
      }
      std::vector<double> lat(static_cast<size_t>(L), 0.0);
      for (size_t j = 0; j < keys.size(); ++j) {
        const float* kv = a.kv + keys[j] * row;
        for (int64_t i = 0; i < L; ++i) lat[i] += p[j] * kv[i];
      }
      for (int64_t i = 0; i < v; ++i) {
        double s = 0.0;
        for (int64_t l = 0; l < L; ++l) s += lat[l] * uv[i * L + l];
        o[i] = static_cast<float>(s);
      }
    }
}

void attend_naive(const MlaMoeConfig& c, const MlaWeights& w, const MlaAttendArgs& a, Tensor& out) {
  const int64_t n = a.q->dim(0), H = c.n_heads, nope = c.qk_nope_dim, rope = c.qk_rope_dim, v = c.v_head_dim;
  const int64_t L = c.kv_lora_rank, row = L + rope, qk = nope + rope, T = a.p0 + n;
  // Every key and value, decompressed: kv_b_proj of each cached latent, [T, H, nope + v].
  Tensor latent = Tensor::empty({T, L}, DType::F32);
  for (int64_t s = 0; s < T; ++s) std::copy(a.kv + s * row, a.kv + s * row + L, latent.data<float>() + s * L);
  const Tensor kvd = linear(latent, w.kv_b);
  const float* kd = kvd.data<float>();
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float* q = a.q->data<float>() + (t * H + h) * qk;
      const std::vector<int64_t> keys = keys_of(a, t);
      std::vector<double> p(keys.size());
      for (size_t j = 0; j < keys.size(); ++j) {
        const float* k_nope = kd + (keys[j] * H + h) * (nope + v);
        const float* k_rope = a.kv + keys[j] * row + L;
        p[j] = a.scale * (dot(q, k_nope, nope) + dot(q + nope, k_rope, rope));
      }
      float* o = out.data<float>() + (t * H + h) * v;
      std::fill(o, o + v, 0.0f);
      if (!softmax(p)) continue;
      std::vector<double> acc(static_cast<size_t>(v), 0.0);
      for (size_t j = 0; j < keys.size(); ++j) {
        const float* val = kd + (keys[j] * H + h) * (nope + v) + nope;
        for (int64_t i = 0; i < v; ++i) acc[i] += p[j] * val[i];
      }
      for (int64_t i = 0; i < v; ++i) o[i] = static_cast<float>(acc[i]);
    }
}

}  // namespace

MlaQuery mla_query(const MlaMoeConfig& c, const RopeTable& rope, const MlaWeights& w, const Tensor& h, int64_t p0) {
  const int64_t n = h.dim(0), H = c.n_heads, qk = c.qk_head_dim();
  MlaQuery r;
  if (c.q_lora_rank > 0) {
    r.q_latent = linear(h, w.q_a, w.q_a_bias);
    rms_norm(r.q_latent.data<float>(), n, c.q_lora_rank, c.q_lora_rank, w.q_a_norm, kLoraNormEps,
             r.q_latent.data<float>(), c.q_lora_rank);
    r.q = linear(r.q_latent, w.q_b);
  } else {
    r.q = linear(h, w.q_proj);
  }
  r.q = r.q.reshape({n, H, qk});
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hd = 0; hd < H; ++hd) rope.apply(r.q.data<float>() + (t * H + hd) * qk + c.qk_nope_dim, p0 + t, c.mla_rope);
  return r;
}

Tensor mla_kv_rows(const MlaMoeConfig& c, const RopeTable& rope, const MlaWeights& w, const Tensor& h, int64_t p0) {
  const int64_t n = h.dim(0), L = c.kv_lora_rank, row = L + c.qk_rope_dim;
  Tensor kv = linear(h, w.kv_a, w.kv_a_bias);  // [n, L + rope]
  float* d = kv.data<float>();
  rms_norm(d, n, L, row, w.kv_a_norm, kLoraNormEps, d, row);
  for (int64_t t = 0; t < n; ++t) rope.apply(d + t * row + L, p0 + t, c.mla_rope);
  return kv;
}

void mla_attend(MlaForm form, const MlaMoeConfig& c, const MlaWeights& w, const MlaAttendArgs& a, Tensor& out) {
  IC_ASSERT(a.q && a.q->rank() == 3 && a.q->dim(1) == c.n_heads && a.q->dim(2) == c.qk_head_dim());
  const int64_t n = a.q->dim(0);
  IC_ASSERT(out.rank() == 3 && out.dim(0) == n && out.dim(1) == c.n_heads && out.dim(2) == c.v_head_dim);
  if (a.selection)
    IC_CHECK(a.selection->rank() == 2 && a.selection->dim(0) == n && a.selection->dtype() == DType::I32,
             "MLA: a selection for {} queries must be I32 [{}, k], got {}", n, n, a.selection->desc());
  if (a.selection) check_selection(*a.selection, a.p0);
  if (form == MlaForm::Absorbed)
    attend_absorbed(c, w, a, out);
  else
    attend_naive(c, w, a, out);
}

}  // namespace ic::dsa
