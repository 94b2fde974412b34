#include "runtime/perplexity.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/token_logprob.h"

namespace ic {

double log_prob(std::span<const float> logits, int32_t target) {
  return ops::cpu::row_logprob(logits.data(), static_cast<int64_t>(logits.size()), target);
}

double PerplexityResult::ppl_from(int64_t min_position) const {
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < nll.size(); ++i)
    if (position[i] >= min_position) {
      sum += nll[i];
      ++count;
    }
  return count ? std::exp(sum / count) : 0.0;
}

PerplexityResult perplexity(Model& model, std::span<const int32_t> tokens, int64_t ctx,
                            const std::function<void(const PerplexityProgress&)>& progress) {
  const ModelInfo& c = model.info();
  IC_CHECK(ctx >= 2, "perplexity: context must be at least 2 tokens, got {}", ctx);
  IC_CHECK(ctx <= c.context_max, "perplexity: context {} exceeds the model's trained context {}", ctx,
           c.context_max);
  const int64_t n = static_cast<int64_t>(tokens.size());
  IC_CHECK(n >= 2, "perplexity: need at least 2 tokens, got {}", n);
  PerplexityResult r;
  r.n_tokens = n;
  r.n_windows = (n + ctx - 1) / ctx;
  if (n % ctx == 1) --r.n_windows;  // a 1-token tail has nothing to predict
  const auto kv_owner = model.make_cache(ctx);
  ModelCache& kv = *kv_owner;
  std::vector<float> lps;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t w = 0; w < r.n_windows; ++w) {
    const int64_t b = w * ctx, e = std::min(n, b + ctx);
    kv.clear();
    // Rows 0 .. e-b-2 predict tokens b+1 .. e-1 (the window's last row predicts nothing).
    lps.resize(static_cast<size_t>(e - b - 1));
    model.forward_logprobs(tokens.subspan(b, e - b - 1), kv, tokens.subspan(b + 1, e - b - 1), lps.data());
    for (int64_t i = 0; i + 1 < e - b; ++i) {
      const double lp = lps[i];
      r.nll.push_back(static_cast<float>(-lp));
      r.position.push_back(static_cast<int32_t>(i + 1));
      r.nll_sum -= lp;
      ++r.n_scored;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (progress) progress({w + 1, r.n_windows, e, n, r.seconds, std::exp(r.nll_sum / r.n_scored)});
  }
  r.ppl = std::exp(r.nll_sum / r.n_scored);
  return r;
}

}  // namespace ic
