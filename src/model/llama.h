#pragma once
// Llama-family dense transformer (SmolLM2 and relatives) read from a GGUF file: tied or separate
// output head, RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU feed-forward.
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "io/tokenizer.h"
#include "model/dsa.h"
#include "model/model.h"
#include "ops/linear.h"
#include "ops/rope.h"

namespace ic {
namespace gguf {
class File;
}

struct LlamaConfig {
  int64_t n_layers = 0;
  int64_t dim = 0;         // residual width
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  int64_t vocab = 0;
  int64_t context_max = 0;  // trained context length (llama.context_length)
  float rope_base = 10000.0f;
  float norm_eps = 1e-5f;
  ops::RopeStyle rope_style = ops::RopeStyle::kAdjacent;

  static LlamaConfig from_gguf(const gguf::File& f);
};

// Keys and values of every layer for one sequence, head-major: [n_kv_heads, capacity, head_dim];
// with a DSA spec also the indexer key cache of each F layer, [capacity, indexer head_dim]
// (S layers get none).
class KVCache : public ModelCache {
 public:
  KVCache(const LlamaConfig& cfg, int64_t capacity, Device device, const DsaSpec* dsa = nullptr);
  Tensor& k(int64_t layer) { return k_[layer]; }
  Tensor& v(int64_t layer) { return v_[layer]; }
  Tensor& index_k(int64_t layer) { return index_k_[layer]; }  // undefined on S layers
  int64_t bytes() const override;
  int64_t index_bytes() const override;

 private:
  std::vector<Tensor> k_, v_, index_k_;
};

struct LlamaLayer {
  Tensor attn_norm;  // F32 [dim]
  Tensor ffn_norm;   // F32 [dim]
  ops::LinearWeight wq, wk, wv, wo, w_gate, w_up, w_down;
};

// The llama family behind the Model interface. Indexers are not part of a GGUF: set_dsa
// attaches them from an indexer file (model/dsa.h), which makes the model a DSA model.
class LlamaModel final : public Model {
 public:
  // Map the GGUF, read the config and tokenizer, and load weights for `device`.
  static std::unique_ptr<LlamaModel> load(const std::string& path, Device device = Device::CPU);
  ~LlamaModel() override;

  const LlamaConfig& config() const { return cfg_; }
  const ModelInfo& info() const override { return info_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }
  Device device() const override { return device_; }
  const std::string& path() const override { return path_; }
  int64_t weight_bytes() const override;

  const LayerPattern* pattern() const override { return dsa_ ? &dsa_->pattern : nullptr; }
  // Keeps the spec's indexers; every F layer of `pattern` needs one.
  void set_pattern(const LayerPattern& pattern) override;
  bool has_indexer(int64_t layer) const override;
  int64_t topk() const override { return dsa_ ? dsa_->config.topk : 0; }

  std::unique_ptr<ModelCache> make_cache(int64_t capacity) const override {
    return std::make_unique<KVCache>(cfg_, capacity, device_, dsa_.get());
  }
  // The same cache as make_cache, by its concrete type (tests and llama-only tools).
  KVCache make_kv(int64_t capacity) const { return KVCache(cfg_, capacity, device_, dsa_.get()); }
  Tensor embed(std::span<const int32_t> tokens) const override;
  void forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0, IndexReuse& reuse) override;
  void output_logits(const Tensor& x, float* logits) override;
  void output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out) override;

  // Run as a DSA model: indexers on the spec's F layers, sparse attention over their top-k on
  // every layer. Null returns to dense attention. Caches must be made after this call.
  void set_dsa(std::shared_ptr<const DsaSpec> spec);
  const DsaSpec* dsa() const { return dsa_.get(); }
  const LlamaLayer& layer(int64_t i) const { return layers_[i]; }
  const ops::LinearWeight& output() const { return output_; }
  const Tensor& output_norm() const { return output_norm_; }
  const gguf::File& gguf() const { return *file_; }

  // CPU steps of at most kPoolTokens tokens (decode) run their linears and attention on the
  // model's ThreadPool (as many threads as omp_get_max_threads() says at the call, made anew
  // when that changes), everything else on OpenMP. Results are bitwise the same either way;
  // off puts decode back on OpenMP (tests compare the two).
  static constexpr int64_t kPoolTokens = 4;
  void set_decode_pool(bool on) { use_pool_ = on; }

 private:
  LlamaModel() = default;
  // The selection of F layer l for n tokens at p0 (indexer projections, key cache write, top-k).
  Tensor select(int64_t l, const Tensor& h, const Tensor& pos, KVCache& kv, int64_t p0, const LayerPattern& pat);

  std::string path_;
  Device device_ = Device::CPU;
  LlamaConfig cfg_;
  ModelInfo info_;
  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<LlamaLayer> layers_;
  Tensor output_norm_;
  ops::LinearWeight output_;
  const void* embd_rows_ = nullptr;  // token_embd in the mapping: [vocab] rows of dim
  DType embd_type_ = DType::F32;
  std::shared_ptr<const DsaSpec> dsa_;
  std::vector<IndexerRunWeights> index_run_;  // GPU only: per layer, empty where the spec has none
  bool use_pool_ = true;
  std::unique_ptr<ThreadPool> pool_;

  ThreadPool* decode_pool(int64_t n_tok);  // null where OpenMP runs the step
  // y_i = x @ W_i^T for each (W_i, y_i): on the pool, x quantised once and every product in
  // one parallel region; otherwise ops::linear one by one.
  void linears(const Tensor& x, std::initializer_list<std::pair<const ops::LinearWeight*, Tensor*>> outs);
};

// Plain reference forward: dequantised f32 weights, scalar loops, double accumulations, the whole
// causal context recomputed. Slow and obvious; the fast path is tested against it.
// Returns F32 [n, vocab] logits for every position of `tokens` (starting at position 0).
Tensor llama_reference_forward(const LlamaModel& model, std::span<const int32_t> tokens);

}  // namespace ic
