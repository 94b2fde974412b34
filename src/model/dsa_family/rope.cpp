#include "model/dsa_family/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace ic::dsa {

namespace {

// YaRN's dimension at which a wavelength makes `rotations` turns over the original context.
double correction_dim(double rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
}

}  // namespace

RopeTable::RopeTable(const RopeScaling& rope, int64_t dim) : dim_(dim) {
  IC_CHECK(dim > 0 && dim % 2 == 0, "rope: the rotated width must be even and positive, got {}", dim);
  const int64_t half = dim / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  // HF evaluates these in float32 (torch.arange(...).float() / dim, base ** that); float math here
  // gives the same values up to the last bit of pow, far below what any test can see.
  std::vector<float> pos_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    pos_freq[i] = static_cast<float>(std::pow(rope.theta, static_cast<double>(static_cast<float>(2 * i) /
                                                                              static_cast<float>(dim))));
  if (rope.type == "default") {
    for (int64_t i = 0; i < half; ++i) inv_freq_[i] = 1.0f / pos_freq[i];
    return;
  }
  IC_CHECK(rope.type == "yarn", "rope: type '{}' is not supported (default and yarn are)", rope.type);
  attention_factor_ = rope.attention_factor;
  const double d = static_cast<double>(dim);
  const double orig = static_cast<double>(rope.original_max_positions);
  double low = correction_dim(rope.beta_fast, d, rope.theta, orig);
  double high = correction_dim(rope.beta_slow, d, rope.theta, orig);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, d - 1.0);
  if (low == high) high += 0.001;  // HF's guard against a zero-width ramp
  const float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float extrapolation = 1.0f - ramp;  // 1: keep the original frequency
    const float inv_extra = 1.0f / pos_freq[i];
    const float inv_inter = 1.0f / (factor * pos_freq[i]);
    inv_freq_[i] = inv_inter * (1.0f - extrapolation) + inv_extra * extrapolation;
  }
}

void RopeTable::apply(float* x, int64_t pos, MlaRope style) const {
  const int64_t half = dim_ / 2;
  const std::vector<float> tmp(x, x + dim_);  // the interleaved layout moves values
  const double af = attention_factor_;
  for (int64_t i = 0; i < half; ++i) {
    // f32 angle as HF forms it (inv_freq @ position_ids in float32), then cos/sin.
    const float angle = inv_freq_[i] * static_cast<float>(pos);
    const double c = std::cos(static_cast<double>(angle)) * af;
    const double s = std::sin(static_cast<double>(angle)) * af;
    const double a = style == MlaRope::Half ? tmp[i] : tmp[2 * i];
    const double b = style == MlaRope::Half ? tmp[i + half] : tmp[2 * i + 1];
    x[i] = static_cast<float>(a * c - b * s);
    x[i + half] = static_cast<float>(b * c + a * s);
  }
}

}  // namespace ic::dsa
