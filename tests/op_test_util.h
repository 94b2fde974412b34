#pragma once
// Helpers for operation tests: fresh random inputs and the f32 rounding constants the
// tolerances are derived from.
#include <cstdint>
#include <random>
#include <vector>

namespace ic::test {

constexpr double kU = 5.9604644775390625e-8;  // unit roundoff of f32, 2^-24
// gamma_n = n u / (1 - n u): bound on the relative rounding error of an n-term f32 sum of
// products (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5).
inline double gamma(double n) { return n * kU / (1.0 - n * kU); }

// Fresh inputs every run; print `seed` (SCOPED_TRACE) so a failure can be replayed.
struct Rng {
  uint32_t seed = std::random_device{}();
  std::mt19937 gen{seed};
  std::vector<float> normal(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
};

}  // namespace ic::test
