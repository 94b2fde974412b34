#pragma once
// AdamW for the indexer weights (Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
// Algorithm 2, in the form PyTorch's torch.optim.AdamW implements), with global-norm gradient
// clipping and a linear warm-up + cosine learning-rate schedule. The IndexerWeights are the
// fp32 master weights; the moments are fp32; each element's update is computed in double and
// rounded once. Step t (1-based), g the clipped gradient:
//   lr_t   = schedule(t)
//   theta -= lr_t * wd * theta                   (decoupled; not on the LayerNorm scale/bias)
//   m      = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   theta -= lr_t * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// Clipping: norm = ||g||_2 over all five tensors (double, fixed order); if norm > clip_norm,
// g *= clip_norm / norm, so the clipped norm equals the cap (to rounding).
// Elementwise and sequential in a fixed order: deterministic.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/indexer.h"

namespace ic {

struct AdamWConfig {
  double lr = 1e-3;            // peak learning rate (DeepSeek's indexer warm-up uses 1e-3)
  double min_lr = 0.0;         // floor the cosine decays to
  int64_t warmup_steps = 0;    // lr rises linearly: step t <= warmup gets lr * t / warmup
  int64_t total_steps = 1000;  // cosine from the end of warm-up to here; min_lr after
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;   // on wq, wk, wproj only
  double clip_norm = 0.0;      // global-norm cap; <= 0 disables clipping

  void validate() const;  // throws ic::Error naming the bad field
};

// The learning rate of (1-based) step t.
double adamw_lr(const AdamWConfig& cfg, int64_t step);

struct AdamWStepInfo {
  double lr = 0.0;
  double grad_norm = 0.0;   // before clipping
  double clip_scale = 1.0;  // factor applied to the gradient
};

class AdamW {
 public:
  AdamW(const AdamWConfig& cfg, const IndexerConfig& icfg, int64_t dim);

  // One update of w from grad (unchanged; both IndexerWeights-shaped for this optimizer).
  AdamWStepInfo step(IndexerWeights& w, const IndexerWeights& grad);
  int64_t steps() const { return step_; }
  const AdamWConfig& config() const { return cfg_; }

  // State as named tensors for a checkpoint: "m.<name>", "v.<name>" (F32, the weight's shape)
  // for name in wq, wk, k_norm, k_bias, wproj, and "step" (I32 [1]). Copies.
  std::vector<std::pair<std::string, Tensor>> state() const;
  // Restores from state(): every name present with the right shape and dtype, or ic::Error.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& named);

 private:
  AdamWConfig cfg_;
  IndexerConfig icfg_;
  int64_t dim_;
  int64_t step_ = 0;
  IndexerWeights m_, v_;  // moments, weight-shaped
};

}  // namespace ic
