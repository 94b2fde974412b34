#include "model/dsa_family/cache.h"

namespace ic::dsa {

MlaCache::MlaCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, int64_t index_dim)
    : ModelCache(capacity), kv_(static_cast<size_t>(c.n_layers)), index_k_(static_cast<size_t>(c.n_layers)) {
  for (int64_t l = 0; l < c.n_layers; ++l) {
    kv_[l] = Tensor::zeros({capacity, c.kv_lora_rank + c.qk_rope_dim}, DType::F32);
    if (pattern && pattern->is_full(l)) index_k_[l] = Tensor::zeros({capacity, index_dim}, DType::F32);
  }
}

int64_t MlaCache::bytes() const {
  int64_t b = index_bytes();
  for (const Tensor& t : kv_) b += t.nbytes();
  return b;
}

int64_t MlaCache::index_bytes() const {
  int64_t b = 0;
  for (const Tensor& t : index_k_)
    if (t.defined()) b += t.nbytes();
  return b;
}

ParallelCache::ParallelCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, int64_t index_dim,
                             int ranks)
    : ModelCache(capacity) {
  for (int r = 0; r < ranks; ++r) ranks_.push_back(std::make_unique<MlaCache>(c, capacity, pattern, index_dim));
}

int64_t ParallelCache::bytes() const {
  int64_t b = 0;
  for (const auto& r : ranks_) b += r->bytes();
  return b;
}

int64_t ParallelCache::index_bytes() const {
  int64_t b = 0;
  for (const auto& r : ranks_) b += r->index_bytes();
  return b;
}

}  // namespace ic::dsa
