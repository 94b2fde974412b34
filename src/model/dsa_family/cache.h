#pragma once
// The DSA family's per-sequence cache on the CPU reference path: per layer one MLA row per token,
// [latent (kv_lora_rank), RoPE'd k_rope (qk_rope_head_dim)] in f32, and on the F layers of the
// pattern the cache was made for, the indexer key of each token ([index_head_dim], f32). S layers
// and dense models get no indexer keys.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/layer_pattern.h"
#include "model/model.h"

namespace ic::dsa {

class MlaCache final : public ModelCache {
 public:
  // pattern: null for a dense model; otherwise its F layers get index_dim-wide indexer keys.
  MlaCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, int64_t index_dim);
  Tensor& kv(int64_t layer) { return kv_[static_cast<size_t>(layer)]; }          // F32 [capacity, kv_lora + rope]
  Tensor& index_k(int64_t layer) { return index_k_[static_cast<size_t>(layer)]; }  // F32 [capacity, Di]; may be undefined
  int64_t bytes() const override;
  int64_t index_bytes() const override;

 private:
  std::vector<Tensor> kv_, index_k_;
};

}  // namespace ic::dsa
