#include "indexcache/teacher.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/simd.h"

namespace ic {

namespace {

struct Dims {
  int64_t n, n_heads, n_kv, head_dim;
};

Dims check_qk(const Tensor& q, const Tensor& k, Device device) {
  check_tensor(q, "q", DType::F32, device, 3);
  check_tensor(k, "k", DType::F32, device, 3);
  const Dims d{q.dim(0), q.dim(1), k.dim(1), q.dim(2)};
  IC_CHECK(k.dim(0) == d.n, "attention_targets: q has {} tokens but k has {}", d.n, k.dim(0));
  IC_CHECK(k.dim(2) == d.head_dim, "attention_targets: q head_dim {} but k head_dim {}", d.head_dim, k.dim(2));
  IC_CHECK(d.n >= 1 && d.n_kv >= 1 && d.n_heads % d.n_kv == 0,
           "attention_targets: {} query heads are not a multiple of {} KV heads (n = {})", d.n_heads, d.n_kv, d.n);
  return d;
}

// One target row: logits over s <= t per head, softmax, head mean, L1 normalisation.
// row: [n] output (written in full); logits: [t + 1] scratch.
IC_SIMD_CLONES
void target_row(const float* q /* [n_heads, head_dim] of token t */, const float* k /* [n, n_kv, head_dim] */,
                const Dims& d, int64_t t, float* row /* [n] */, float* logits /* [n] */) {
  const int64_t group = d.n_heads / d.n_kv;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  for (int64_t s = 0; s < d.n; ++s) row[s] = 0.0f;
  for (int64_t h = 0; h < d.n_heads; ++h) {
    const float* qh = q + h * d.head_dim;
    const int64_t g = h / group;
    float m = -INFINITY;
    for (int64_t s = 0; s <= t; ++s) {
      logits[s] = ops::dot_f32(qh, k + (s * d.n_kv + g) * d.head_dim, d.head_dim) * scale;
      m = logits[s] > m ? logits[s] : m;
    }
    float z = 0.0f;
    for (int64_t s = 0; s <= t; ++s) {
      logits[s] = ops::exp_fast(logits[s] - m);
      z += logits[s];
    }
    const float inv = 1.0f / (z * static_cast<float>(d.n_heads));
    for (int64_t s = 0; s <= t; ++s) row[s] += logits[s] * inv;
  }
  float total = 0.0f;
  for (int64_t s = 0; s <= t; ++s) total += row[s];
  const float inv_total = 1.0f / total;
  for (int64_t s = 0; s <= t; ++s) row[s] *= inv_total;
}

}  // namespace

Tensor attention_targets(const Tensor& q, const Tensor& k) {
  const Dims d = check_qk(q, k, q.device());
  if (q.device() == Device::CUDA) return teacher_detail::attention_targets_cuda(q, k);
  Tensor p = Tensor::empty({d.n, d.n}, DType::F32);
  const float* qd = q.data<float>();  // [n, n_heads, head_dim]
  const float* kd = k.data<float>();  // [n, n_kv, head_dim]
  float* pd = p.data<float>();        // [n, n]
#pragma omp parallel
  {
    std::vector<float> logits(static_cast<size_t>(d.n));
    // Row t costs O(t): dynamic chunks balance the triangle; each row is one thread's work.
#pragma omp for schedule(dynamic, 8)
    for (int64_t t = 0; t < d.n; ++t)
      target_row(qd + t * d.n_heads * d.head_dim, kd, d, t, pd + t * d.n, logits.data());
  }
  return p;
}

Tensor attention_targets_reference(const Tensor& q, const Tensor& k) {
  const Dims d = check_qk(q, k, Device::CPU);
  Tensor p = Tensor::zeros({d.n, d.n}, DType::F32);
  const float* qd = q.data<float>();
  const float* kd = k.data<float>();
  const int64_t group = d.n_heads / d.n_kv;
  std::vector<double> acc(static_cast<size_t>(d.n)), e(static_cast<size_t>(d.n));
  for (int64_t t = 0; t < d.n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t h = 0; h < d.n_heads; ++h) {
      double m = -INFINITY;
      for (int64_t s = 0; s <= t; ++s) {
        double dot = 0.0;
        for (int64_t c = 0; c < d.head_dim; ++c)
          dot += static_cast<double>(qd[(t * d.n_heads + h) * d.head_dim + c]) *
                 kd[(s * d.n_kv + h / group) * d.head_dim + c];
        e[s] = dot / std::sqrt(static_cast<double>(d.head_dim));
        m = std::max(m, e[s]);
      }
      double z = 0.0;
      for (int64_t s = 0; s <= t; ++s) z += (e[s] = std::exp(e[s] - m));
      for (int64_t s = 0; s <= t; ++s) acc[s] += e[s] / z / static_cast<double>(d.n_heads);
    }
    double total = 0.0;
    for (int64_t s = 0; s <= t; ++s) total += acc[s];
    for (int64_t s = 0; s <= t; ++s) p.data<float>()[t * d.n + s] = static_cast<float>(acc[s] / total);
  }
  return p;
}

Tensor mean_targets(std::span<const Tensor> targets) {
  IC_CHECK(!targets.empty(), "mean_targets: no target distributions given");
  const Device device = targets[0].device();
  check_tensor(targets[0], "targets[0]", DType::F32, device, 2);
  const Shape shape = targets[0].shape();
  for (size_t j = 1; j < targets.size(); ++j) {
    check_tensor(targets[j], "targets[j]", DType::F32, device, 2);
    IC_CHECK(targets[j].shape() == shape, "mean_targets: target {} is {} but target 0 is {}", j,
             targets[j].shape().str(), shape.str());
  }
  Tensor out = Tensor::empty(shape, DType::F32, device);
  if (device == Device::CUDA) {
    teacher_detail::mean_targets_cuda(targets, out);
    return out;
  }
  const int64_t numel = out.numel();
  const float inv = 1.0f / static_cast<float>(targets.size());
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < numel; ++i) {
    float s = 0.0f;
    for (const Tensor& t : targets) s += t.data<float>()[i];  // fixed order: deterministic
    o[i] = s * inv;
  }
  return out;
}

}  // namespace ic
