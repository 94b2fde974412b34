#include <algorithm>
#include <cmath>

#include "ops/token_logprob.h"

namespace ic::ops::cpu {

double row_logprob(const float* row, int64_t vocab, int32_t target) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
  return row[target] - mx - std::log(sum);
}

void token_logprob(const TokenLogprobParams& p) {
#pragma omp parallel for schedule(static) if (p.n_rows > 1)
  for (int64_t i = 0; i < p.n_rows; ++i)
    p.out[i] = static_cast<float>(row_logprob(p.logits + i * p.vocab, p.vocab, p.target[i]));
}

}  // namespace ic::ops::cpu
