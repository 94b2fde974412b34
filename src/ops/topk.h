#pragma once
// Top-k selection over causal score rows, as DSA's indexer needs it:
//   out[t, :] = indices of the k largest scores[t, s], s over 0 .. q_pos0 + t,
// (or over 0 .. lengths[t] - 1 when per-row lengths are given: ragged and paged rows),
// ordered by (score descending, index ascending); ties at the k-th value go to the lower
// index. A row with fewer than k valid entries is padded with -1. The order is a total
// order on float bits (order_key below), so every backend and thread count gives the same
// canonical output.
#include <bit>
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace ic::ops {

struct TopkParams {
  const float* scores;  // [n_q, row_stride]; row t is read on [0, q_pos0 + t] only
  int32_t* out;         // [n_q, k]; -1 after the row's valid entries
  int64_t n_q;
  int64_t row_stride;   // >= q_pos0 + n_q
  int64_t q_pos0;
  int64_t k;            // >= 1; the CUDA kernels take k <= cuda::kTopkMaxK
  const int32_t* lengths = nullptr;  // [n_q] valid entries of each row, in [0, row_stride];
                                     // null: q_pos0 + t + 1 (causal rows)
};

// Valid entries of row t.
inline int64_t topk_row_len(const TopkParams& p, int64_t t) {
  return p.lengths ? p.lengths[t] : p.q_pos0 + t + 1;
}

// scores: F32 [n_q, n_keys] with n_keys >= q_pos0 + n_q; out: I32 [n_q, k].
void topk(const Tensor& scores, int64_t q_pos0, Tensor& out);
// Ragged rows: row t has lengths[t] valid entries (I32 [n_q], each in [0, n_keys]; on the GPU the
// values are not read back, and the kernels clamp them to [0, n_keys]).
void topk(const Tensor& scores, const Tensor& lengths, Tensor& out);

// Monotone map from float to uint32: a ranks above b iff order_key(a) > order_key(b).
// -0 and +0 map to one key (equal scores tie); NaN ranks above +inf (positive sign bit clear)
// or below -inf, so even bad input yields a deterministic answer.
// Branch-free so that a row's keys vectorise: negative floats flip all bits, others set the sign.
inline uint32_t order_key(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  u = u == 0x80000000u ? 0u : u;
  return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
}

namespace cpu {
void topk(const TopkParams& p);
// Sorts each row's valid entries by (score desc, index asc) with a float comparator; the
// input must be free of NaN.
void topk_reference(const TopkParams& p);

// Radix selection of one row, reusable across rows (it keeps its scratch); one per thread.
// Writes min(k, n) indices in canonical order, then -1 up to k. n may be 0.
class RowTopk {
 public:
  void select(const float* row, int64_t n, int64_t k, int32_t* out);

 private:
  std::vector<uint32_t> keys_;       // order keys of the row
  std::vector<uint64_t> chosen_;     // (~key << 32 | index) of entries known to be selected
  std::vector<uint64_t> tied_;       // (key << 32 | index) of entries in the boundary bucket
  std::vector<uint64_t> tied_next_;
};
}  // namespace cpu
namespace cuda {
constexpr int64_t kTopkMaxK = 2048;
// Radix selection on the GPU (topk_cuda.cu); same canonical output as cpu::topk, bit for bit.
// Pointers are device memory; lengths, when given, too.
void topk(const TopkParams& p);
}

}  // namespace ic::ops
