#include <algorithm>
#include <cmath>

#include "ops/token_logprob.h"

namespace ic::ops::cpu {

void token_logprob(const TokenLogprobParams& p) {
#pragma omp parallel for schedule(static) if (p.n_rows > 1)
  for (int64_t i = 0; i < p.n_rows; ++i) {
    const float* row = p.logits + i * p.vocab;
    double mx = row[0];
    for (int64_t v = 1; v < p.vocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    double sum = 0.0;
    for (int64_t v = 0; v < p.vocab; ++v) sum += std::exp(row[v] - mx);
    p.out[i] = static_cast<float>(row[p.target[i]] - mx - std::log(sum));
  }
}

}  // namespace ic::ops::cpu
