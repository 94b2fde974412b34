#pragma once
// The DSA family's per-sequence cache on the CPU reference path: per layer one MLA row per token,
// [latent (kv_lora_rank), RoPE'd k_rope (qk_rope_head_dim)] in f32, and on the F layers of the
// pattern the cache was made for, the indexer key of each token ([index_head_dim], f32). S layers
// and dense models get no indexer keys.
#include <cstdint>
#include <memory>
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

// The cache of a model run on N in-process ranks (model/dsa_family/shard.h): one MlaCache per rank,
// each the whole latent cache and indexer keys (both are replicated: every rank computes every row
// and holds it, as each GPU would). bytes() counts all ranks; rank_bytes() one of them.
class ParallelCache final : public ModelCache {
 public:
  ParallelCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, int64_t index_dim, int ranks);
  int ranks() const { return static_cast<int>(ranks_.size()); }
  MlaCache& rank(int r) { return *ranks_[static_cast<size_t>(r)]; }
  int64_t bytes() const override;
  int64_t index_bytes() const override;
  int64_t rank_bytes() const { return ranks_.front()->bytes(); }

 private:
  std::vector<std::unique_ptr<MlaCache>> ranks_;
};

}  // namespace ic::dsa
