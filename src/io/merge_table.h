#pragma once
// BPE merges keyed by the pair of token ids: (left, right) -> (rank, merged id). Open addressing
// with linear probing, because BPE does a lookup per adjacent pair and a node-based
// std::unordered_map spent most of the encode time in cache misses.
#include <bit>
#include <cstdint>
#include <vector>

namespace ic {

class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  // Room for n merges at a load factor of at most 1/2.
  explicit MergeTable(size_t n = 0) { reserve(n); }

  void reserve(size_t n) {
    const size_t cap = std::bit_ceil(std::max<size_t>(16, 2 * n));
    if (cap <= slots_.size()) return;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    shift_ = 64 - std::countr_zero(cap);
    size_ = 0;
    for (const Slot& s : old)
      if (s.key != kEmpty) insert(unkey_left(s.key), unkey_right(s.key), s.merge);
  }

  // Keeps the existing entry if the pair is already present (the best rank comes first).
  void insert(int32_t left, int32_t right, Merge m) {
    if (2 * (size_ + 1) > slots_.size()) reserve(size_ + 1);
    const uint64_t k = key(left, right);
    for (size_t i = slot_of(k);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == k) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = {k, m};
        ++size_;
        return;
      }
    }
  }

  // Null if the pair does not merge.
  const Merge* find(int32_t left, int32_t right) const {
    const uint64_t k = key(left, right);
    for (size_t i = slot_of(k);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == k) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  // Token ids are non-negative, so no pair has all bits set.
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  static int32_t unkey_left(uint64_t k) { return static_cast<int32_t>(k >> 32); }
  static int32_t unkey_right(uint64_t k) { return static_cast<int32_t>(k & 0xFFFFFFFFu); }
  // Fibonacci hashing: the top bits of key * 2^64/phi.
  size_t slot_of(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }

  std::vector<Slot> slots_;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace ic
