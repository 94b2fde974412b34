#pragma once
// Helpers for operation tests: fresh random inputs and the f32 rounding constants the
// tolerances are derived from.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"

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

// Runs body() once per CPU kernel path this machine supports (baseline, AVX2, AVX-512), with
// that path forced (ops/simd_dispatch.h), and the automatic choice restored after each.
template <class Body>
void for_each_cpu_isa(Body&& body) {
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512}) {
    if (!cpu_supports(isa)) continue;
    SCOPED_TRACE(std::string(cpu_isa_name(isa)));
    force_cpu_isa(isa);
    body();
    force_cpu_isa(std::nullopt);
  }
}

}  // namespace ic::test
