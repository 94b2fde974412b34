#pragma once
// Next-token sampling: greedy when temperature is 0, otherwise temperature, then top-k, then
// top-p (nucleus) filtering, drawn with a seeded generator so runs repeat exactly.
#include <cstdint>
#include <random>
#include <span>

namespace ic {

struct SamplerConfig {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  int32_t sample(std::span<const float> logits);  // [vocab]
  const SamplerConfig& config() const { return cfg_; }

 private:
  SamplerConfig cfg_;
  std::mt19937_64 rng_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace ic
