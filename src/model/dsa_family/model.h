#pragma once
// The DSA family behind the Model interface: DeepSeek-V3.2, GLM-MoE-DSA (GLM-5, the IndexCache
// paper's 30B) and GLM-4.7-Flash (dense MLA) from HF folders, on the CPU reference path (f32
// weights, double accumulation; model/dsa_family/{mla,indexer,moe}.h define each block).
// Layer loop per token chunk (HF's decoder layer):
//   h = RMSNorm(x); MLA query and cache rows; on F layers the indexer's top-k (IndexReuse
//   publishes it), every layer attends over reuse.selection(l) (dense reuse: all causal keys);
//   x += o_proj(attn); x += MLP or MoE(RMSNorm(x)).
// The IndexCache pattern comes from FamilyOptions, else from config.json under
// FamilyOptions::rule (model/pattern_conventions.h), else all F. Indexer weights are read for
// the pattern's F layers only; set_pattern reads missing ones from the folder when it has them.
// The dense MLA model (glm4_moe_lite) takes indexers from an indexer file instead (set_dsa, the
// project's x-fed indexers of model/dsa.h, as the llama family takes them): that is how the
// IndexCache paper made its 30B DSA model from GLM-4.7-Flash.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "io/hf_folder.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/gpu_forward.h"
#include "model/dsa_family/mla.h"
#include "model/dsa_family/rope.h"
#include "model/dsa_family/shard.h"
#include "model/dsa.h"
#include "model/dsa_family/weights.h"
#include "model/model.h"
#include "model/pattern_conventions.h"
#include "parallel/communicator.h"

namespace ic {

namespace dsa {
class MlaCache;
}

struct FamilyOptions {
  // Load the checkpoint's MTP/NextN layers (num_nextn_predict_layers). Not implemented yet: true
  // on a checkpoint that has them is an error saying so; by default they are skipped.
  bool mtp = false;
  std::optional<LayerPattern> pattern;  // overrides config.json's IndexCache knobs
  PatternRule rule = PatternRule::HF;   // how config.json's knobs are read
  dsa::MlaForm mla = dsa::MlaForm::Absorbed;  // Naive: decompressed per-head K/V (a cross-check)
  // The GPU path's indexer in fp8 (GpuForward::set_indexer_fp8); the CPU reference has none.
  bool indexer_fp8 = false;
  // Tensor and expert parallelism on the CPU path (docs/PARALLEL.md): tp ranks as threads of this
  // process (parallel/local_group.h); tp 1 and ep 1 is the single-rank path, unchanged.
  dsa::ParallelSpec parallel;
};

class MlaMoeModel final : public Model {
 public:
  // Device::CUDA: the GPU path (model/dsa_family/gpu_forward.h) beside the CPU weights; a
  // checkpoint whose dims the GPU kernels do not take is an error naming both (check_gpu_dims).
  static std::unique_ptr<MlaMoeModel> load(const std::string& dir, Device device, const FamilyOptions& opt);
  // A model of config `c` with random weights from `seed` (model/dsa_family/random_weights.h), no
  // checkpoint and no tokenizer: on Device::CUDA the weights are made in place on the GPU (the
  // host holds only the embedding table), on the CPU as the reference path's f32 tensors, the same
  // values. `name` is what path() reports ("random:<preset>"). Every layer has its indexer.
  static std::unique_ptr<MlaMoeModel> random(const MlaMoeConfig& c, uint64_t seed, Device device,
                                             const std::string& name, const FamilyOptions& opt = {});
  ~MlaMoeModel() override;

  const MlaMoeConfig& config() const { return cfg_; }
  const ModelInfo& info() const override { return info_; }
  // From tokenizer.json + tokenizer_config.json; throws the reason when the folder has none or
  // it could not be read (the model still runs on token ids).
  const Tokenizer& tokenizer() const override;
  Device device() const override { return gpu_ ? Device::CUDA : Device::CPU; }
  const std::string& path() const override { return dir_; }
  int64_t weight_bytes() const override;

  const LayerPattern* pattern() const override { return pattern_ ? &*pattern_ : nullptr; }
  void set_pattern(const LayerPattern& pattern) override;
  bool has_indexer(int64_t layer) const override;
  int64_t topk() const override;

  std::unique_ptr<ModelCache> make_cache(int64_t capacity) const override;
  Tensor embed(std::span<const int32_t> tokens) const override;
  void forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0, IndexReuse& reuse) override;
  void output_logits(const Tensor& x, float* logits) override;
  void output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out) override;

  // Dense MLA models only: indexers from an indexer file on the spec's F layers (fed from the
  // attention norm's output, model/indexer.h), which makes the model a DSA model; null detaches
  // them. A DSA architecture's own indexers come from its checkpoint instead.
  void set_dsa(std::shared_ptr<const DsaSpec> spec);
  const DsaSpec* dsa() const { return attached_.get(); }

  void set_phase_timing(bool on) override {
    if (gpu_) gpu_->set_phase_timing(on);
  }
  void set_mla_form(dsa::MlaForm form) { mla_form_ = form; }

  // Runs later forwards on p.tp in-process ranks (model/dsa_family/shard.h cuts each rank's
  // weights from this model's); tp 1 and ep 1 returns to the single-rank path. Caches must be made
  // after a change. The CPU path only: the GPU path is single-rank so far. Errors (a head, channel
  // or expert count N does not divide, ep neither 1 nor tp) name the model, the dim and N.
  void set_parallel(const dsa::ParallelSpec& p);
  const dsa::ParallelSpec& parallel() const { return parallel_spec_; }
  // What rank r has sent since the last reset (all zero on the single-rank path).
  parallel::CommStats comm_stats(int rank) const;
  void reset_comm_stats();
  const dsa::LayerWeights& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const dsa::RopeTable& rope() const { return rope_; }

 private:
  MlaMoeModel(std::optional<hf::Folder> folder, std::string dir, MlaMoeConfig cfg);
  // The indexer of F layer l for the n tokens of h at p0: writes their keys, returns I32 [n, k].
  // tap: dump the indexer's intermediates (false on ranks other than 0).
  Tensor select(int64_t l, const Tensor& h, const Tensor& q_latent, Tensor& keys, int64_t p0, bool tap = true);
  // The same for an attached indexer file's indexer (fed from h alone).
  Tensor select_attached(int64_t l, const Tensor& h, Tensor& keys, int64_t p0, bool tap);
  // forward_layers' argument checks, shared by the single-rank and the parallel path.
  void check_forward(int64_t l0, int64_t l1, const Tensor& x, const ModelCache& cache, int64_t p0,
                     const IndexReuse& reuse) const;
  // forward_layers on the in-process ranks, and one rank's layer loop; `published` holds each
  // rank's latest selection, so that every rank checks its top-k is rank 0's.
  void forward_parallel(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0, IndexReuse& reuse);
  void forward_rank(parallel::Communicator& comm, const dsa::RankShard& s, int64_t l0, int64_t l1, Tensor& x,
                    dsa::MlaCache& mc, int64_t p0, IndexReuse& reuse, std::vector<const Tensor*>& published);
  Tensor final_logits(const Tensor& x);
  void load_tokenizer(const hf::Folder& f);
  dsa::GpuTap gpu_tap() const;  // dump() for the GPU path; empty when nothing is tapped

  std::optional<hf::Folder> folder_;  // kept open: set_pattern may read indexers later (none: random)
  std::string dir_;
  MlaMoeConfig cfg_;
  ModelInfo info_;
  dsa::RopeTable rope_;
  std::optional<LayerPattern> pattern_;  // null: dense (glm4_moe_lite without attached indexers)
  std::shared_ptr<const DsaSpec> attached_;  // glm4_moe_lite's indexers from a file
  std::vector<dsa::LayerWeights> layers_;
  Tensor embed_, final_norm_, lm_head_;  // [vocab, hidden], [hidden], [vocab, hidden] (the embedding when tied)
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string tokenizer_error_;  // why there is none
  dsa::MlaForm mla_form_ = dsa::MlaForm::Absorbed;
  std::unique_ptr<dsa::GpuForward> gpu_;  // set on Device::CUDA: every forward runs there
  dsa::ParallelSpec parallel_spec_;
  struct Parallel;                   // the shards and the in-process group (model.cpp)
  std::unique_ptr<Parallel> par_;    // set when parallel_spec_ is not single-rank
};

// Loads an HF folder of the DSA family on the CPU reference path or the GPU path; errors name the
// folder, file and tensor.
std::unique_ptr<Model> load_dsa_family(const std::string& dir, Device device, const FamilyOptions& opt = {});

}  // namespace ic
