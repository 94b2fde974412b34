#pragma once
// Llama-family dense transformer (SmolLM2 and relatives) read from a GGUF file: tied or separate
// output head, RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU feed-forward.
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/tokenizer.h"
#include "model/dsa.h"
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
class KVCache {
 public:
  KVCache(const LlamaConfig& cfg, int64_t capacity, Device device, const DsaSpec* dsa = nullptr);
  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }  // tokens stored
  void clear() { size_ = 0; }
  void set_size(int64_t n);
  Tensor& k(int64_t layer) { return k_[layer]; }
  Tensor& v(int64_t layer) { return v_[layer]; }
  Tensor& index_k(int64_t layer) { return index_k_[layer]; }  // undefined on S layers
  int64_t bytes() const;
  int64_t index_bytes() const;

 private:
  int64_t capacity_ = 0, size_ = 0;
  std::vector<Tensor> k_, v_, index_k_;
};

struct LlamaLayer {
  Tensor attn_norm;  // F32 [dim]
  Tensor ffn_norm;   // F32 [dim]
  ops::LinearWeight wq, wk, wv, wo, w_gate, w_up, w_down;
};

// Called with named intermediates ("attn_norm", "q", "k", "v", "attn_out", "ffn_out", "result_norm",
// ...) of each layer (-1 for whole-model tensors), so a run can be compared tensor by tensor with an
// independent implementation.
using TensorCallback = std::function<void(const std::string& name, int layer, const Tensor& t)>;

// Where forward time went, accumulated over calls until reset (wall seconds).
struct ForwardStats {
  double total = 0.0;
  double indexer = 0.0;    // indexer projections, scores and top-k (F layers only)
  double attention = 0.0;  // dense or sparse attention
  int64_t tokens = 0;
  int64_t indexer_layer_runs = 0;  // F-layer indexer evaluations (one per F layer per chunk)
};

class LlamaModel {
 public:
  // Map the GGUF, read the config and tokenizer, and load weights for `device`.
  static std::unique_ptr<LlamaModel> load(const std::string& path, Device device = Device::CPU);
  ~LlamaModel();

  const LlamaConfig& config() const { return cfg_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  Device device() const { return device_; }
  const std::string& path() const { return path_; }
  int64_t weight_bytes() const;

  // Run `tokens` at positions [kv.size(), kv.size() + n) and append them to `kv`.
  // Fills `logits` (F32 [n_out, vocab] on the CPU) for the last n_out tokens, n_out = all_logits ? n : 1.
  void forward(std::span<const int32_t> tokens, KVCache& kv, Tensor& logits, bool all_logits);
  // forward, scoring every row instead of returning its logits: out[i] = log p(targets[i] |
  // tokens up to i) (host floats, n of them). On a GPU only these n values leave the device.
  void forward_logprobs(std::span<const int32_t> tokens, KVCache& kv, std::span<const int32_t> targets, float* out);

  // Embedding rows for `tokens`: F32 [n, dim] on the host.
  Tensor embed(std::span<const int32_t> tokens) const;

  // The forward pass a layer range at a time, for tools that rerun part of the model (the
  // greedy pattern search reuses every layer before the one it changes).
  // x: F32 [n, dim] on the model's device, the residual stream entering layer l0, updated in
  // place to the stream leaving layer l1 - 1. The n tokens sit at positions [p0, p0 + n); their
  // keys and values (and indexer keys) are written into `kv` for each layer run, which must hold
  // positions < p0 for those layers; kv.size() is left to the caller.
  // topk (DSA only): I32 [n, k], the selection of the nearest F layer before l0 on entry (needed
  // when l0 is S), that of the last F layer run on exit.
  // pattern: overrides the spec's pattern for this call (null: the spec's); its F layers need
  // loaded indexer weights and indexer caches in `kv`.
  void forward_layers(int64_t l0, int64_t l1, Tensor& x, KVCache& kv, int64_t p0, Tensor& topk,
                      const LayerPattern* pattern = nullptr);
  // Final norm and output head: x F32 [rows, dim] on the model's device -> logits, F32
  // [rows, vocab] host floats.
  void output_logits(const Tensor& x, float* logits);
  // Final norm, output head and ops::token_logprob: out[r] = log p(targets[r]) for each row of
  // x (targets and out: `rows` host values).
  void output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out);

  void set_tensor_callback(TensorCallback cb) { callback_ = std::move(cb); }
  // Run as a DSA model: indexers on the spec's F layers, sparse attention over their top-k on
  // every layer. Null returns to dense attention. KV caches must be made after this call.
  void set_dsa(std::shared_ptr<const DsaSpec> spec);
  const DsaSpec* dsa() const { return dsa_.get(); }
  KVCache make_cache(int64_t capacity) const { return KVCache(cfg_, capacity, device_, dsa_.get()); }
  const ForwardStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  const LlamaLayer& layer(int64_t i) const { return layers_[i]; }
  const ops::LinearWeight& output() const { return output_; }
  const Tensor& output_norm() const { return output_norm_; }
  const gguf::File& gguf() const { return *file_; }

 private:
  LlamaModel() = default;
  // Runs one chunk through every layer; returns the residual stream leaving the last layer.
  Tensor forward_chunk(std::span<const int32_t> tokens, KVCache& kv);
  void dump(const char* name, int layer, const Tensor& t) const {
    if (callback_) callback_(name, layer, t);
  }

  std::string path_;
  Device device_ = Device::CPU;
  LlamaConfig cfg_;
  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<LlamaLayer> layers_;
  Tensor output_norm_;
  ops::LinearWeight output_;
  const void* embd_rows_ = nullptr;  // token_embd in the mapping: [vocab] rows of dim
  DType embd_type_ = DType::F32;
  TensorCallback callback_;
  std::shared_ptr<const DsaSpec> dsa_;
  std::vector<IndexerRunWeights> index_run_;  // GPU only: per layer, empty where the spec has none
  ForwardStats stats_;
};

// Plain reference forward: dequantised f32 weights, scalar loops, double accumulations, the whole
// causal context recomputed. Slow and obvious; the fast path is tested against it.
// Returns F32 [n, vocab] logits for every position of `tokens` (starting at position 0).
Tensor llama_reference_forward(const LlamaModel& model, std::span<const int32_t> tokens);

}  // namespace ic
