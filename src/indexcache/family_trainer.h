#pragma once
// Indexer distillation on the DSA family (docs/DISTILL.md, "The DSA family"). The model is frozen
// and runs dense on the CPU reference path, one layer at a time (Model::forward_layers), with its
// taps (attn_norm, q_latent, q, kv_latent) copied for the current layer group only: an F layer
// and the S layers it serves. When the group is complete, the F layer's indexer is distilled
// toward the mean of the group's MLA teacher targets (mla_teacher.h), streamed a block of query
// rows at a time into family_indexer_loss (family_loss.h), then the group is dropped. So the
// memory is that of one group, 4 n (m (H + 1) (kv_lora + rope) + hidden + q_lora) bytes for m
// layers of n tokens, plus the loss's blocks; never every layer's q/kv, never an [n, n] matrix.
//   warmup:  every layer F, each indexer against its own layer's target (DeepSeek's warm-up);
//   pattern: the pattern's F layers, each against the mean target of the layers it serves (L_multi).
// What is trained:
//   deepseek_v32 / glm_moe_dsa: the checkpoint's own indexers (wq_b, wk, k_norm weight and
//     bias, weights_proj), starting from the checkpoint's weights (random where it has none);
//   glm4_moe_lite (dense MLA): the project's x-fed indexers (model/indexer.h, the IndexerConfig
//     given), from a random init: the DSA warm-up that made the IndexCache paper's 30B model.
// The weights live in ic::IndexerWeights (wq = wq_b, wproj = weights_proj for the checkpoint's
// own form); AdamW as adamw.h (same update and schedule), per F layer. Deterministic.
#include <cstdint>
#include <vector>

#include "indexcache/adamw.h"
#include "indexcache/family_loss.h"
#include "indexcache/text_data.h"
#include "indexcache/trainer.h"
#include "model/dsa.h"
#include "model/dsa_family/model.h"
#include "model/layer_pattern.h"

namespace ic {

struct FamilyTrainerConfig {
  DistillMode mode = DistillMode::kWarmup;
  LayerPattern pattern;  // kPattern only
  AdamWConfig adamw;
  int64_t batch = 1;
  uint64_t seed = 0;
  int64_t chunk = 256;  // query rows per block of teacher targets
  IndexerConfig attach;  // glm4_moe_lite: the x-fed indexers' shape (topk also the recall's k)
};

// One optimizer state for a set of five tensors of any shapes (AdamW of adamw.h's formula and
// schedule; weight decay on wq, wk, wproj).
class FamilyAdamW {
 public:
  FamilyAdamW(const AdamWConfig& cfg, const IndexerWeights& like);
  AdamWStepInfo step(IndexerWeights& w, const IndexerWeights& grad);

 private:
  AdamWConfig cfg_;
  int64_t step_ = 0;
  IndexerWeights m_, v_;
};

// A set of indexers on a DSA-family model, as the loss and the evaluation take them.
struct FamilyIndexers {
  bool own = true;             // the checkpoint's form (q from the query latent), else x-fed
  FamilyIndexerShape shape;
  LayerPattern pattern;
  std::vector<IndexerWeights> w;  // [n_layers], defined on F layers (wq = wq_b, wproj = weights_proj)
  IndexerConfig attach;           // x-fed only: RoPE base, dims and style
};
// The checkpoint's own indexers of pattern's F layers (loaded: set_pattern first). Copies.
FamilyIndexers checkpoint_indexers(const MlaMoeModel& model, const LayerPattern& pattern);
// An indexer file's x-fed indexers (for a dense MLA model).
FamilyIndexers attached_indexers(const DsaSpec& spec);

class FamilyTrainer {
 public:
  FamilyTrainer(MlaMoeModel& model, const TextWindows& data, FamilyTrainerConfig cfg);

  StepReport step();
  bool done() const { return step_ >= cfg_.adamw.total_steps; }
  int64_t steps_done() const { return step_; }
  const LayerPattern& pattern() const { return pattern_; }
  // True for deepseek_v32 / glm_moe_dsa (the checkpoint's own indexers are trained).
  bool own_indexers() const { return own_; }
  const IndexerWeights& weights(int64_t l) const { return weights_[static_cast<size_t>(l)]; }
  // The checkpoint's form of an own indexer (own_indexers() only).
  dsa::IndexerWeights checkpoint_weights(int64_t l) const;
  // The x-fed indexers as a DSA spec (glm4_moe_lite only).
  DsaSpec spec() const;
  FamilyIndexerShape shape() const { return shape_; }
  FamilyIndexers indexers() const;  // the current weights (copies)

 private:
  MlaMoeModel* model_;
  const TextWindows* data_;
  FamilyTrainerConfig cfg_;
  LayerPattern pattern_;
  bool own_ = false;
  FamilyIndexerShape shape_;
  std::vector<IndexerWeights> weights_;
  std::vector<std::unique_ptr<FamilyAdamW>> opt_;
  WindowStream stream_;
  int64_t step_ = 0;
};

// Held-out evaluation: for every layer l, its own MLA teacher target against the indexer of its
// source F layer: mean KL and recall (the target's mass on the indexer's top-k), as evaluate() of
// trainer.h does for the llama family. The model runs dense (its pattern is not used).
EvalReport evaluate_family(MlaMoeModel& model, const FamilyIndexers& ix, const TextWindows& heldout,
                           int64_t chunk = 256);

}  // namespace ic
