#pragma once
// The DSA family's rotary embedding, computed as HF's RotaryEmbedding computes it: inverse
// frequencies of the "default" or "yarn" rope type (modeling_rope_utils.py), cos/sin of
// position * inv_freq, both multiplied by the attention factor (YaRN's mscale ratio; 1 for
// "default"), applied to a slice of dim values in the half-split or interleaved layout.
#include <cstdint>
#include <vector>

#include "model/dsa_family/config.h"

namespace ic::dsa {

class RopeTable {
 public:
  // dim: the rotated width (qk_rope_head_dim), even.
  RopeTable(const RopeScaling& rope, int64_t dim);

  int64_t dim() const { return dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }  // [dim / 2], f32 as HF keeps it
  double attention_factor() const { return attention_factor_; }

  // Rotates x[0, dim) in place for position `pos`. Half: pairs (i, i + dim/2). Interleave: pairs
  // (2i, 2i + 1), written out de-interleaved (rotated evens, then rotated odds), as HF does.
  void apply(float* x, int64_t pos, MlaRope style) const;

 private:
  int64_t dim_;
  std::vector<float> inv_freq_;
  double attention_factor_ = 1.0;
};

}  // namespace ic::dsa
