#pragma once
// The indexer distillation trainer (docs/DISTILL.md). The main model is frozen and runs dense;
// per training window it yields each layer's input x ("attn_norm") and post-RoPE q/k, from
// which the teacher targets p (teacher.h) are computed; only the indexers of the pattern's F
// layers are trained, with the KL loss of distill_loss.h and one AdamW per F layer.
//   warmup:  all layers F, each indexer against its own layer's p (DeepSeek's dense warm-up).
//   pattern: IndexCache training-aware, each F layer l against the layers it serves,
//            l .. (next F) - 1, with L_multi (the mean target p_bar; same gradient).
// Deterministic: the same model, data, configuration and seed give bitwise-identical weights,
// and a run resumed from a checkpoint continues bitwise as if it had never stopped.
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "indexcache/adamw.h"
#include "indexcache/distill_loss.h"
#include "model/layer_pattern.h"
#include "indexcache/text_data.h"
#include "model/dsa.h"
#include "model/indexer.h"

namespace ic {

class LlamaModel;

enum class DistillMode { kWarmup, kPattern };
const char* distill_mode_name(DistillMode m);        // "warmup" / "pattern"
DistillMode distill_mode_from_string(const std::string& s);  // throws listing both

struct TrainerConfig {
  DistillMode mode = DistillMode::kWarmup;
  LayerPattern pattern;     // kPattern: the pattern trained for; kWarmup: ignored (all F)
  IndexerConfig indexer;
  AdamWConfig adamw;        // adamw.total_steps is the length of the run
  int64_t batch = 4;        // windows per step
  uint64_t seed = 0;        // random init of the indexers and the data order
  std::string init_path;    // start from this indexer file's weights; empty = random init
  // Where the teacher targets, the loss and its gradient run. CUDA: the captures and p stay on
  // the GPU (p never crosses the bus), each F layer's weights are uploaded once per step and its
  // gradient, accumulated over the batch on the GPU, downloaded once; AdamW stays on the host
  // master weights (a few MB per layer), so checkpoints are unchanged. Not a run field: a run
  // may resume on the other device (it then continues to f32 rounding, not bitwise).
  Device device = Device::CPU;
};

// One layer's captured forward intermediates for n tokens at positions 0..n-1 (F32, on the
// device capture_layers was asked for).
struct LayerCapture {
  Tensor x;  // [n, dim] the attention-norm output the indexer reads
  Tensor q;  // [n, n_heads, head_dim] after RoPE
  Tensor k;  // [n, n_kv_heads, head_dim] after RoPE
};
// Runs the (dense) model on `tokens` from position 0 and returns every layer's capture on
// `device` (copied there from wherever the model runs). The model's tensor callback is replaced
// for the call and cleared afterwards.
std::vector<LayerCapture> capture_layers(LlamaModel& model, std::span<const int32_t> tokens,
                                         Device device = Device::CPU);

struct StepReport {
  int64_t step = 0, total = 0;  // step just done (1-based) of total
  DistillStats stats;           // summed over the step's F layers and windows
  double mean_kl = 0.0;         // mean over F layers of their mean per-row KL to their target
  double recall = 0.0;          // mean over F layers of recall@topk of their target
  double lr = 0.0;
  double max_grad_norm = 0.0;   // over F layers, before clipping
  int64_t tokens = 0;           // tokens forwarded this step
  double seconds = 0.0;         // wall time of the step, of which:
  double forward_s = 0.0;       //   the frozen model's forward (with the capture)
  double teacher_s = 0.0;       //   teacher targets
  double loss_s = 0.0;          //   indexer loss and gradient
};

class Trainer {
 public:
  // `model` must run dense (no DSA spec set); `data` outlives the trainer. Initialises the F
  // layers' indexers (random from cfg.seed, or cfg.init_path) and their optimizers.
  Trainer(LlamaModel& model, const TextWindows& data, TrainerConfig cfg);

  StepReport step();
  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return cfg_.adamw.total_steps; }
  bool done() const { return step_ >= cfg_.adamw.total_steps; }
  const TrainerConfig& config() const { return cfg_; }
  const LayerPattern& pattern() const { return pattern_; }
  LoaderPosition loader_position() const { return stream_.position(); }

  // What a checkpoint must match to be resumed, as field -> value: model file name and size,
  // data fingerprint and window count, ctx, batch, every optimizer and indexer setting, seed,
  // mode, pattern and init file.
  const std::map<std::string, std::string>& run_fields() const { return fields_; }

  // One safetensors file, written atomically: blk.<l>.indexer.* and opt.<l>.{m.*, v.*, step}
  // for each F layer, metadata distill.step / distill.epoch / distill.index and
  // distill.cfg.<field> for every run field.
  void save_checkpoint(const std::string& path) const;
  // Restores weights, optimizer states, step and data position. Throws ic::Error naming the
  // first field whose value differs from this run's, or what is missing.
  void resume(const std::string& path);

  // The trained indexers as a DSA spec (weights copied; metadata empty).
  DsaSpec spec() const;
  const IndexerWeights& weights(int64_t layer) const { return weights_[layer]; }
  std::vector<std::pair<std::string, Tensor>> optimizer_state(int64_t layer) const;

 private:
  void cpu_batch(const std::vector<int64_t>& full, std::vector<IndexerWeights>& grad,
                 std::vector<DistillStats>& stats, StepReport& r);
  void gpu_batch(const std::vector<int64_t>& full, std::vector<IndexerWeights>& grad,
                 std::vector<DistillStats>& stats, StepReport& r);

  LlamaModel* model_;
  const TextWindows* data_;
  TrainerConfig cfg_;
  LayerPattern pattern_;
  int64_t dim_ = 0;
  std::vector<IndexerWeights> weights_;         // [n_layers]; undefined on S layers
  std::vector<std::unique_ptr<AdamW>> opt_;     // [n_layers]; null on S layers
  WindowStream stream_;
  int64_t step_ = 0;
  std::map<std::string, std::string> fields_;
};

// Held-out evaluation of a DSA spec: for every layer l, its own teacher p^(l) against the
// indexer of its source F layer (itself when F): mean per-row KL(p^(l) || q^(src)) and recall,
// the share of p^(l) on that indexer's top-k.
struct LayerEval {
  int64_t layer = 0;
  int64_t source = 0;
  DistillStats stats;
};
struct EvalReport {
  std::vector<LayerEval> layers;
  int64_t windows = 0, tokens = 0;
  double seconds = 0.0;
  double mean_kl() const;   // mean over layers of their mean KL
  double recall() const;    // mean over layers of their recall
};
// device: where the targets and the loss run (CUDA: as the trainer's CUDA path).
EvalReport evaluate(LlamaModel& model, const DsaSpec& spec, const TextWindows& heldout, Device device = Device::CPU);

}  // namespace ic
