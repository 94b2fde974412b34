#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace ic {

GenerateResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, const std::string&)>& on_token) {
  const ModelInfo& c = model.info();
  IC_CHECK(!prompt.empty(), "generate: the prompt is empty");
  IC_CHECK(opt.max_new_tokens >= 0, "generate: negative token count {}", opt.max_new_tokens);
  const int64_t total = static_cast<int64_t>(prompt.size()) + opt.max_new_tokens;
  IC_CHECK(total <= c.context_max,
           "generate: prompt of {} tokens plus {} new tokens exceeds the model's context of {} tokens",
           prompt.size(), opt.max_new_tokens, c.context_max);
  GenerateResult r;
  r.prompt_tokens = prompt;
  const auto kv_owner = model.make_cache(std::max<int64_t>(total, 1));
  ModelCache& kv = *kv_owner;
  Sampler sampler(opt.sampler);
  Tensor logits;
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  model.forward(prompt, kv, logits, false);
  r.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    const int32_t tok = sampler.sample({logits.data<float>(), static_cast<size_t>(c.vocab)});
    if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), tok) != opt.stop_tokens.end()) {
      r.stopped = true;
      break;
    }
    r.tokens.push_back(tok);
    const std::string piece = model.tokenizer().piece(tok);
    r.text += piece;
    if (on_token) on_token(tok, piece);
    if (step + 1 == opt.max_new_tokens) break;  // no need to run the last token through
    const int32_t one[1] = {tok};
    model.forward(one, kv, logits, false);
    ++r.decode_steps;
  }
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return r;
}

}  // namespace ic
