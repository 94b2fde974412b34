#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace ic {

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {
  IC_CHECK(cfg.temperature >= 0.0f, "temperature must be >= 0, got {}", cfg.temperature);
  IC_CHECK(cfg.top_k >= 0, "top-k must be >= 0, got {}", cfg.top_k);
  IC_CHECK(cfg.top_p > 0.0f && cfg.top_p <= 1.0f, "top-p must be in (0, 1], got {}", cfg.top_p);
}

int32_t argmax(std::span<const float> logits) {
  IC_CHECK(!logits.empty(), "argmax of an empty vector");
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (cfg_.temperature == 0.0f) return argmax(logits);
  const int64_t n = static_cast<int64_t>(logits.size());
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  // Highest logit first, ties by lower id, so the candidate order never depends on the sort.
  auto better = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t keep = cfg_.top_k > 0 ? std::min<int64_t>(cfg_.top_k, n) : n;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
  ids.resize(static_cast<size_t>(keep));
  std::vector<double> p(ids.size());
  const double mx = logits[ids[0]];
  double sum = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) sum += p[i] = std::exp((logits[ids[i]] - mx) / cfg_.temperature);
  if (cfg_.top_p < 1.0f) {
    double cum = 0.0;
    size_t cut = ids.size();
    for (size_t i = 0; i < ids.size(); ++i) {
      cum += p[i] / sum;
      if (cum >= cfg_.top_p) {
        cut = i + 1;
        break;
      }
    }
    p.resize(cut);
    sum = std::accumulate(p.begin(), p.end(), 0.0);
  }
  const double r = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double cum = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    cum += p[i];
    if (r < cum) return ids[i];
  }
  return ids[p.size() - 1];
}

}  // namespace ic
