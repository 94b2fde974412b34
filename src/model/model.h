#pragma once
// The one interface every architecture implements (the llama family from GGUF, the DSA family
// of MLA + MoE models from HF folders). Tools (search, trainer, eval, passkey, perplexity,
// generate, bench, the CLI) talk to a model only through it, so they never know which family
// they run. IndexCache's F/S rule is not here: it lives in IndexReuse (model/index_reuse.h),
// which each architecture's layer loop asks who runs an indexer and whose selection to use.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/tensor.h"
#include "io/tokenizer.h"
#include "model/index_reuse.h"
#include "model/layer_pattern.h"

namespace ic {

// What every tool needs to know of a model's shape.
struct ModelInfo {
  std::string family;        // "llama", "deepseek_v32", "glm_moe_dsa", "glm4_moe_lite"
  std::string architecture;  // as the file names it: "llama", "DeepseekV32ForCausalLM", ...
  int64_t n_layers = 0;      // layers that take part in IndexCache patterns (no MTP layer)
  int64_t dim = 0;           // residual width
  int64_t vocab = 0;
  int64_t context_max = 0;   // the longest context the model supports (its position limit)
};

// Per-sequence state of every layer: keys and values (or the latent KV of MLA) and the indexer
// key cache of each F layer (S layers get none). Tokens [0, size()) are stored.
class ModelCache {
 public:
  virtual ~ModelCache() = default;
  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }
  void clear() { size_ = 0; }
  void set_size(int64_t n);  // throws outside [0, capacity]
  virtual int64_t bytes() const = 0;        // everything the cache holds
  virtual int64_t index_bytes() const = 0;  // of which indexer keys

 protected:
  explicit ModelCache(int64_t capacity);

 private:
  int64_t capacity_ = 0, size_ = 0;
};

// Called with named intermediates ("attn_norm", "q", "topk", "attn", "l_out", "result_norm", ...)
// of each layer (-1 for whole-model tensors), so a run can be compared tensor by tensor with an
// independent implementation, and the trainer and overlap can tap what they need.
using TensorCallback = std::function<void(const std::string& name, int layer, const Tensor& t)>;

// Where forward time went, accumulated over calls until reset (wall seconds).
struct ForwardStats {
  double total = 0.0;
  double indexer = 0.0;    // indexer projections, scores and top-k (F layers only)
  double attention = 0.0;  // dense or sparse attention
  int64_t tokens = 0;
  int64_t indexer_layer_runs = 0;  // F-layer indexer evaluations (one per F layer per chunk)
};

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  virtual const ModelInfo& info() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  virtual Device device() const = 0;
  virtual const std::string& path() const = 0;  // the file or folder it was loaded from
  virtual int64_t weight_bytes() const = 0;

  // The IndexCache pattern the model runs (null: dense attention), and the top-k of its
  // selections. set_pattern switches F/S layers for later calls; each F layer needs indexer
  // weights (has_indexer). Caches must be made after a switch that adds F layers.
  virtual const LayerPattern* pattern() const = 0;
  virtual void set_pattern(const LayerPattern& pattern) = 0;
  virtual bool has_indexer(int64_t layer) const = 0;
  virtual int64_t topk() const = 0;  // 0 when dense

  // A cache for `capacity` tokens, with indexer keys on the current pattern's F layers.
  virtual std::unique_ptr<ModelCache> make_cache(int64_t capacity) const = 0;

  // Embedding rows for `tokens`: F32 [n, dim] on the host. Throws on an id outside the vocabulary.
  virtual Tensor embed(std::span<const int32_t> tokens) const = 0;

  // The forward pass a layer range at a time, for tools that rerun part of the model (the
  // greedy search reuses every layer before the one it changes).
  // x: F32 [n, dim] on the model's device, the residual stream entering layer l0, updated in
  // place to the stream leaving layer l1 - 1. The n tokens sit at positions [p0, p0 + n); their
  // cache entries are written for each layer run (the cache must hold positions < p0 for those
  // layers); cache.size() is left to the caller. `reuse` says which layers run an indexer and
  // hands F layers' selections to S layers; when l0 is S, the selection of its source F layer
  // must have been provided to it. A dense reuse (no pattern) runs dense attention.
  virtual void forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0,
                              IndexReuse& reuse) = 0;
  // Final norm and output head: x F32 [rows, dim] on the model's device -> logits, F32
  // [rows, vocab] host floats.
  virtual void output_logits(const Tensor& x, float* logits) = 0;
  // Final norm, output head and ops::token_logprob: out[r] = log p(targets[r]) for each row of
  // x (targets and out: `rows` host values). On a GPU only these values leave the device.
  virtual void output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out) = 0;

  // Run `tokens` at positions [cache.size(), cache.size() + n) under the model's pattern and
  // append them to the cache, in chunks of chunk_tokens(). Fills `logits` (F32 [n_out, vocab]
  // on the host) for the last n_out tokens, n_out = all_logits ? n : 1.
  void forward(std::span<const int32_t> tokens, ModelCache& cache, Tensor& logits, bool all_logits);
  // forward, scoring every row instead of returning its logits: out[i] = log p(targets[i] |
  // tokens up to i) (host floats, n of them).
  void forward_logprobs(std::span<const int32_t> tokens, ModelCache& cache, std::span<const int32_t> targets,
                        float* out);
  // The reuse object of one forward under the model's current pattern.
  IndexReuse make_reuse() const;

  void set_tensor_callback(TensorCallback cb) { callback_ = std::move(cb); }
  // GPU paths: with phase timing on, the forward synchronises the device around the indexer and
  // attention so that stats() splits the time; off (the default), it never waits on the device
  // for timing. The CPU paths always time their phases.
  virtual void set_phase_timing(bool on) { (void)on; }
  const ForwardStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 protected:
  Model() = default;
  // Tokens per forward step: bounds activation and logit memory.
  virtual int64_t chunk_tokens() const { return 512; }
  void dump(const char* name, int layer, const Tensor& t) const {
    if (callback_) callback_(name, layer, t);
  }
  bool tapped() const { return static_cast<bool>(callback_); }
  ForwardStats stats_;

 private:
  // One chunk through every layer; returns the residual stream leaving the last layer.
  Tensor forward_chunk(std::span<const int32_t> tokens, ModelCache& cache);
  TensorCallback callback_;
};

// Switches a model's pattern for the scope's lifetime (the search's candidates, eval configs).
class PatternScope {
 public:
  PatternScope(Model& m, const LayerPattern& p);
  ~PatternScope();
  PatternScope(const PatternScope&) = delete;
  PatternScope& operator=(const PatternScope&) = delete;

 private:
  Model& m_;
  std::optional<LayerPattern> saved_;
};

}  // namespace ic
