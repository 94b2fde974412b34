#include <algorithm>
#include <array>
#include <vector>

#include "ops/simd.h"
#include "ops/topk.h"

namespace ic::ops::cpu {

void topk_reference(const TopkParams& p) {
  std::vector<std::pair<float, int32_t>> row;
  for (int64_t t = 0; t < p.n_q; ++t) {
    const float* s = p.scores + t * p.row_stride;
    const int64_t n = topk_row_len(p, t);
    row.clear();
    for (int64_t j = 0; j < n; ++j) row.emplace_back(s[j], static_cast<int32_t>(j));
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    int32_t* o = p.out + t * p.k;
    for (int64_t i = 0; i < p.k; ++i) o[i] = i < n ? row[i].second : -1;
  }
}

namespace {

// Digits of the 32-bit order key, most significant first: 11 + 11 + 10 bits.
constexpr int kDigitShift[3] = {21, 10, 0};
constexpr int kDigitBits[3] = {11, 11, 10};

// The bucket holding the need-th largest entry, scanning buckets from the top; on return
// `need` is how many entries still have to come from that bucket (>= 1).
int boundary_bucket(const std::array<uint32_t, 2048>& hist, int n_buckets, int64_t& need) {
  int b = n_buckets - 1;
  while (static_cast<int64_t>(hist[b]) < need) need -= hist[b--];
  return b;
}

IC_SIMD_CLONES
void row_keys(const float* row, int64_t n, uint32_t* keys) {
  for (int64_t j = 0; j < n; ++j) keys[j] = order_key(row[j]);
}

}  // namespace

// Radix select on the order keys: a histogram of the top digit over the whole row finds
// the bucket holding the k-th largest; entries above it are selected, entries in it are
// refined on the next digit, and so on. After the last digit the remaining entries share
// one key, and the lowest indices win because every pass keeps index order. Only the k
// selected entries are sorted, for the canonical output order.
void RowTopk::select(const float* row, int64_t n, int64_t k, int32_t* out) {
  chosen_.clear();
  auto chosen_entry = [](uint32_t key, int64_t j) {
    return static_cast<uint64_t>(~key) << 32 | static_cast<uint32_t>(j);
  };
  if (n <= k) {
    for (int64_t j = 0; j < n; ++j) chosen_.push_back(chosen_entry(order_key(row[j]), j));
  } else {
    keys_.resize(static_cast<size_t>(n));
    row_keys(row, n, keys_.data());
    // Two interleaved histograms: neighbouring scores often share a bucket, and one table
    // would chain every increment through the same memory word.
    std::array<uint32_t, 2048> hist{}, hist2{};
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      ++hist[keys_[j] >> kDigitShift[0]];
      ++hist2[keys_[j + 1] >> kDigitShift[0]];
    }
    if (j < n) ++hist[keys_[j] >> kDigitShift[0]];
    for (size_t b = 0; b < hist.size(); ++b) hist[b] += hist2[b];
    int64_t need = k;
    const uint32_t top = static_cast<uint32_t>(boundary_bucket(hist, 1 << kDigitBits[0], need));
    tied_.clear();
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t key = keys_[j];
      const uint32_t bucket = key >> kDigitShift[0];
      if (bucket > top)
        chosen_.push_back(chosen_entry(key, j));
      else if (bucket == top)
        tied_.push_back(static_cast<uint64_t>(key) << 32 | static_cast<uint32_t>(j));
    }
    for (int level = 1; level < 3 && static_cast<int64_t>(tied_.size()) > need; ++level) {
      const int shift = kDigitShift[level];
      const uint32_t mask = (1u << kDigitBits[level]) - 1;
      hist.fill(0);
      for (uint64_t e : tied_) ++hist[(e >> (32 + shift)) & mask];
      const uint32_t b = static_cast<uint32_t>(boundary_bucket(hist, 1 << kDigitBits[level], need));
      tied_next_.clear();
      for (uint64_t e : tied_) {
        const uint32_t bucket = (e >> (32 + shift)) & mask;
        if (bucket > b)
          chosen_.push_back(chosen_entry(static_cast<uint32_t>(e >> 32), static_cast<uint32_t>(e)));
        else if (bucket == b)
          tied_next_.push_back(e);
      }
      tied_.swap(tied_next_);
    }
    for (int64_t i = 0; i < need; ++i)
      chosen_.push_back(chosen_entry(static_cast<uint32_t>(tied_[i] >> 32), static_cast<uint32_t>(tied_[i])));
  }
  // Ascending (~key, index) is descending score, then ascending index.
  std::sort(chosen_.begin(), chosen_.end());
  const int64_t m = static_cast<int64_t>(chosen_.size());
  for (int64_t i = 0; i < m; ++i) out[i] = static_cast<int32_t>(chosen_[i] & 0xffffffffu);
  std::fill(out + m, out + k, -1);
}

void topk(const TopkParams& p) {
#pragma omp parallel
  {
    RowTopk sel;
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < p.n_q; ++t)
      sel.select(p.scores + t * p.row_stride, topk_row_len(p, t), p.k, p.out + t * p.k);
  }
}

}  // namespace ic::ops::cpu
