#pragma once
// Perplexity over non-overlapping windows of ctx tokens, each scored from a fresh context:
// tokens 1..len-1 of a window are predicted from the tokens before them in that window; a final
// partial window counts when it has at least 2 tokens. ppl = exp(sum nll / count).
#include <functional>
#include <span>
#include <vector>

#include "model/model.h"

namespace ic {

struct PerplexityResult {
  int64_t n_tokens = 0;   // tokens read
  int64_t n_scored = 0;   // predictions scored
  int64_t n_windows = 0;
  double nll_sum = 0.0;
  double ppl = 0.0;
  double seconds = 0.0;
  std::vector<float> nll;         // per scored token, in order
  std::vector<int32_t> position;  // per scored token: its position in its window (1 .. ctx-1)

  // Perplexity over the scored tokens at window positions >= min_position (e.g. past a DSA
  // top-k, where sparse attention really drops keys); 0 if there are none.
  double ppl_from(int64_t min_position) const;
};

struct PerplexityProgress {
  int64_t window, n_windows, tokens_done, tokens_total;
  double seconds, ppl_so_far;
};

PerplexityResult perplexity(Model& model, std::span<const int32_t> tokens, int64_t ctx,
                            const std::function<void(const PerplexityProgress&)>& progress = nullptr);

// log p(target) from one row of logits, computed stably in double (ops::cpu::row_logprob).
double log_prob(std::span<const float> logits, int32_t target);

}  // namespace ic
