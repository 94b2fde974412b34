#include "indexcache/adamw.h"

#include <cmath>
#include <limits>
#include <numbers>

#include "core/error.h"

namespace ic {

namespace {

constexpr const char* kNames[5] = {"wq", "wk", "k_norm", "k_bias", "wproj"};
constexpr bool kDecayed[5] = {true, true, false, false, true};  // no decay on LayerNorm scale/bias

Tensor& part(IndexerWeights& w, int i) {
  Tensor* t[] = {&w.wq, &w.wk, &w.k_norm, &w.k_bias, &w.wproj};
  return *t[i];
}
const Tensor& part(const IndexerWeights& w, int i) { return part(const_cast<IndexerWeights&>(w), i); }

}  // namespace

void AdamWConfig::validate() const {
  IC_CHECK(lr > 0.0 && std::isfinite(lr), "adamw: lr must be positive and finite, got {}", lr);
  IC_CHECK(min_lr >= 0.0 && min_lr <= lr, "adamw: min_lr {} must be in [0, lr = {}]", min_lr, lr);
  IC_CHECK(warmup_steps >= 0 && total_steps >= 1, "adamw: warmup_steps {} must be >= 0 and total_steps {} >= 1",
           warmup_steps, total_steps);
  IC_CHECK(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0, "adamw: betas ({}, {}) must be in [0, 1)",
           beta1, beta2);
  IC_CHECK(eps > 0.0, "adamw: eps must be positive, got {}", eps);
  IC_CHECK(weight_decay >= 0.0, "adamw: weight_decay must be >= 0, got {}", weight_decay);
}

double adamw_lr(const AdamWConfig& cfg, int64_t step) {
  IC_CHECK(step >= 1, "adamw: steps count from 1, got {}", step);
  if (step <= cfg.warmup_steps) return cfg.lr * static_cast<double>(step) / static_cast<double>(cfg.warmup_steps);
  if (step >= cfg.total_steps) return cfg.min_lr;
  const double progress =
      static_cast<double>(step - cfg.warmup_steps) / static_cast<double>(cfg.total_steps - cfg.warmup_steps);
  return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

AdamW::AdamW(const AdamWConfig& cfg, const IndexerConfig& icfg, int64_t dim)
    : cfg_(cfg), icfg_(icfg), dim_(dim), m_(IndexerWeights::zeros(icfg, dim)), v_(IndexerWeights::zeros(icfg, dim)) {
  cfg_.validate();
}

AdamWStepInfo AdamW::step(IndexerWeights& w, const IndexerWeights& grad) {
  w.check(icfg_, dim_);
  grad.check(icfg_, dim_);
  AdamWStepInfo info;
  double sq = 0.0;
  for (int i = 0; i < 5; ++i) {
    const Tensor& g = part(grad, i);
    for (int64_t j = 0; j < g.numel(); ++j) sq += static_cast<double>(g.data<float>()[j]) * g.data<float>()[j];
  }
  info.grad_norm = std::sqrt(sq);
  IC_CHECK(std::isfinite(info.grad_norm), "adamw: gradient norm is {} at step {}", info.grad_norm, step_ + 1);
  if (cfg_.clip_norm > 0.0 && info.grad_norm > cfg_.clip_norm) info.clip_scale = cfg_.clip_norm / info.grad_norm;

  ++step_;
  info.lr = adamw_lr(cfg_, step_);
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step_));
  for (int i = 0; i < 5; ++i) {
    float* th = part(w, i).data<float>();
    const float* g = part(grad, i).data<float>();
    float* m = part(m_, i).data<float>();
    float* v = part(v_, i).data<float>();
    const double decay = kDecayed[i] ? info.lr * cfg_.weight_decay : 0.0;
    const int64_t count = part(w, i).numel();
    for (int64_t j = 0; j < count; ++j) {
      const double gj = static_cast<double>(g[j]) * info.clip_scale;
      const double mj = cfg_.beta1 * m[j] + (1.0 - cfg_.beta1) * gj;
      const double vj = cfg_.beta2 * v[j] + (1.0 - cfg_.beta2) * gj * gj;
      m[j] = static_cast<float>(mj);
      v[j] = static_cast<float>(vj);
      double t = static_cast<double>(th[j]) * (1.0 - decay);
      t -= info.lr * (mj / bc1) / (std::sqrt(vj / bc2) + cfg_.eps);
      th[j] = static_cast<float>(t);
    }
  }
  return info;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < 5; ++i) {
    out.emplace_back(std::string("m.") + kNames[i], part(m_, i).to(Device::CPU));
    out.emplace_back(std::string("v.") + kNames[i], part(v_, i).to(Device::CPU));
  }
  IC_CHECK(step_ <= std::numeric_limits<int32_t>::max(), "adamw: step {} does not fit the I32 step tensor", step_);
  Tensor s = Tensor::empty({1}, DType::I32);
  s.data<int32_t>()[0] = static_cast<int32_t>(step_);
  out.emplace_back("step", s);
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& named) {
  const auto find = [&](const std::string& name) -> const Tensor& {
    for (const auto& [k, t] : named)
      if (k == name) return t;
    fail("adamw: optimizer state has no tensor '{}'", name);
  };
  IndexerWeights m = IndexerWeights::zeros(icfg_, dim_), v = IndexerWeights::zeros(icfg_, dim_);
  for (int i = 0; i < 5; ++i)
    for (auto [prefix, dst] : {std::pair{"m.", &m}, std::pair{"v.", &v}}) {
      const std::string name = std::string(prefix) + kNames[i];
      const Tensor& src = find(name);
      IC_CHECK(src.defined() && src.dtype() == DType::F32 && src.shape() == part(*dst, i).shape(),
               "adamw: state tensor '{}' is {} but the optimizer needs F32{}", name,
               src.defined() ? src.desc() : std::string("undefined"), part(*dst, i).shape().str());
      part(*dst, i).copy_from(src);
    }
  const Tensor& s = find("step");
  IC_CHECK(s.defined() && s.dtype() == DType::I32 && s.numel() == 1 && s.data<int32_t>()[0] >= 0,
           "adamw: state tensor 'step' must be one non-negative I32, got {}", s.defined() ? s.desc() : "undefined");
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = s.data<int32_t>()[0];
}

}  // namespace ic
