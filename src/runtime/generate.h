#pragma once
// Prefill a prompt, then decode token by token with a sampler, streaming each token's bytes.
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"

namespace ic {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplerConfig sampler;
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these (not printed)
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  // generated, without the stop token
  std::string text;
  double prefill_seconds = 0.0, decode_seconds = 0.0;
  int64_t decode_steps = 0;
  bool stopped = false;  // hit a stop token rather than the length limit
  double prefill_tokens_per_s() const { return prompt_tokens.size() / std::max(prefill_seconds, 1e-9); }
  double decode_tokens_per_s() const { return decode_steps / std::max(decode_seconds, 1e-9); }
};

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t token, const std::string& piece)>& on_token = nullptr);

}  // namespace ic
