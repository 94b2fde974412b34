#pragma once
// Log-probability of one target token per row of logits (the language-model loss):
//   out[t] = logits[t, target[t]] - log(sum_v exp(logits[t, v])).
// Perplexity and the pattern search need only these T numbers, not the T x vocab logits: on a
// GPU the row's log-sum-exp runs where the logits are and only T values cross to the host.
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

struct TokenLogprobParams {
  const float* logits;    // [n_rows, vocab]
  const int32_t* target;  // [n_rows], each in [0, vocab)
  float* out;             // [n_rows]
  int64_t n_rows;
  int64_t vocab;
};

// logits: F32 [n_rows, vocab]; target: I32 [n_rows] (host or the logits' device; checked in
// range on the host); out: F32 [n_rows] on the logits' device.
void token_logprob(const Tensor& logits, const Tensor& target, Tensor& out);

namespace cpu {
// log p(target) of one row of `vocab` logits: max and sum of exponentials in double.
double row_logprob(const float* logits, int64_t vocab, int32_t target);
// row_logprob of every row, rounded to f32: the reference (and the CPU engine's own loss).
void token_logprob(const TokenLogprobParams& p);
}  // namespace cpu
namespace cuda {
// One block per row: a max pass and a sum-of-exp pass in f32, each a fixed-order tree
// reduction (the same bits on every run).
void token_logprob(const TokenLogprobParams& p);
}  // namespace cuda

}  // namespace ic::ops
