#include "model/model.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace ic {

ModelCache::ModelCache(int64_t capacity) : capacity_(capacity) {
  IC_CHECK(capacity > 0, "cache capacity must be positive, got {}", capacity);
}

void ModelCache::set_size(int64_t n) {
  IC_CHECK(n >= 0 && n <= capacity_, "cache size {} outside [0, {}]", n, capacity_);
  size_ = n;
}

IndexReuse Model::make_reuse() const {
  const LayerPattern* p = pattern();
  return p ? IndexReuse(*p) : IndexReuse();
}

Tensor Model::forward_chunk(std::span<const int32_t> tokens, ModelCache& cache) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t p0 = cache.size();
  Tensor x = embed(tokens);
  if (device() != Device::CPU) x = x.to(device());
  dump("embd", -1, x);
  IndexReuse reuse = make_reuse();
  forward_layers(0, info().n_layers, x, cache, p0, reuse);
  cache.set_size(p0 + n);
  return x;
}

namespace {
void check_room(const char* what, int64_t n, const ModelCache& cache, const ModelInfo& info) {
  IC_CHECK(n > 0, "{}: no tokens", what);
  IC_CHECK(cache.size() + n <= cache.capacity(), "{}: {} tokens after {} cached exceed the cache capacity {}", what,
           n, cache.size(), cache.capacity());
  IC_CHECK(cache.size() + n <= info.context_max,
           "{}: {} tokens after {} cached exceed the model's context limit of {} tokens", what, n, cache.size(),
           info.context_max);
}
}  // namespace

void Model::forward(std::span<const int32_t> tokens, ModelCache& cache, Tensor& logits, bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t V = info().vocab;
  check_room("forward", n, cache, info());
  const int64_t n_out = all_logits ? n : 1;
  if (!logits.defined() || logits.dim(0) != n_out || logits.dim(1) != V || logits.device() != Device::CPU)
    logits = Tensor::empty({n_out, V}, DType::F32);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = chunk_tokens();
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t c1 = std::min(n, c0 + chunk);
    const Tensor x = forward_chunk(tokens.subspan(c0, c1 - c0), cache);
    if (all_logits)
      output_logits(x, logits.data<float>() + c0 * V);
    else if (c1 == n)
      output_logits(x.slice_rows(c1 - c0 - 1, c1 - c0), logits.data<float>());
  }
  stats_.total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.tokens += n;
}

void Model::forward_logprobs(std::span<const int32_t> tokens, ModelCache& cache, std::span<const int32_t> targets,
                             float* out) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  check_room("forward_logprobs", n, cache, info());
  IC_CHECK(static_cast<int64_t>(targets.size()) == n, "forward_logprobs: {} targets for {} tokens", targets.size(), n);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = chunk_tokens();
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t c1 = std::min(n, c0 + chunk);
    const Tensor x = forward_chunk(tokens.subspan(c0, c1 - c0), cache);
    output_logprobs(x, targets.subspan(c0, c1 - c0), out + c0);
  }
  stats_.total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.tokens += n;
}

PatternScope::PatternScope(Model& m, const LayerPattern& p) : m_(m) {
  IC_CHECK(m.pattern(), "a layer pattern needs a DSA model (a model with indexers)");
  saved_ = *m.pattern();
  m_.set_pattern(p);
}

PatternScope::~PatternScope() {
  if (saved_) m_.set_pattern(*saved_);
}

}  // namespace ic
