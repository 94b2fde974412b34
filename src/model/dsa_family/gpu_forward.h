#pragma once
// The DSA family's forward on the GPU (MlaMoeModel dispatches here on Device::CUDA; the CPU
// reference path beside it is unchanged). Correctness first: one op after another on the
// legacy default stream, activations allocated per op; docs/FAMILY.md ("GPU path") states the
// design, the roundings and the host syncs. Per layer, for n tokens at positions p0 ..:
//   h      = RMSNorm(x) (f32), bf16 copy for the GEMMs (ops::gemm_bf16, f32 accumulation)
//   q      = q_b(RMSNorm(q_a h)) or q_proj h, RoPE on each head's rope slice (gpu_kernels.h)
//   q576   = [q_nope W_uk (per head, -> 512), q_rope] bf16 [n, H, 576]: the absorbed query
//   cache  rows p0 .. of bf16 [capacity, 576]: [RMSNorm(latent), RoPE(k_rope)]
//   F layers: the indexer (wq_b from the q latent, wk + LayerNorm, RoPE, weights_proj with its
//            scales folded), bf16 keys into the F layer's key cache, ops::indexer_topk; published
//   attend ops::sparse_mla over reuse.selection(l) (dense reuse: every causal key, -1 padded)
//   x     += o_proj([out W_uv^T per head])   (gemm_bf16 accumulating into the f32 stream)
//   x     += MoE: ops::moe_route (f32) + ops::moe_experts (bf16) + shared experts; or the dense MLP
// The head: RMSNorm, bf16 lm_head GEMM, logits f32 on the device (ops::token_logprob for log-probs).
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/gpu_kernels.h"
#include "model/dsa_family/gpu_weights.h"
#include "model/dsa_family/rope.h"
#include "model/dsa_family/weights.h"
#include "model/layer_pattern.h"
#include "model/model.h"
#include "ops/moe_route.h"

namespace ic::dsa {

// Per layer the latent cache, BF16 [capacity, kv_lora + rope] on the GPU, and on the F layers of
// the pattern it was made for the indexer keys: BF16 [capacity, index_head_dim], or with the fp8
// indexer F8_E4M3 [capacity, index_head_dim] and one F32 scale per key [capacity] (S layers: none).
class GpuCache final : public ModelCache {
 public:
  GpuCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, Device dev, bool fp8_keys);
  Tensor& kv(int64_t layer) { return kv_[static_cast<size_t>(layer)]; }
  Tensor& index_k(int64_t layer) { return index_k_[static_cast<size_t>(layer)]; }  // may be undefined
  Tensor& index_scale(int64_t layer) { return index_scale_[static_cast<size_t>(layer)]; }  // fp8 keys only
  bool fp8_keys() const { return fp8_keys_; }
  int64_t bytes() const override;
  int64_t index_bytes() const override;

 private:
  std::vector<Tensor> kv_, index_k_, index_scale_;
  bool fp8_keys_ = false;
};

// The model's tap (Model::dump) as the GPU path calls it; empty when nothing is tapped. Tapped
// tensors are on the GPU.
using GpuTap = std::function<void(const char* name, int layer, const Tensor& t)>;

class GpuForward {
 public:
  // Uploads every layer (with the indexers loaded on the host), the final norm and the head.
  // check_gpu_dims(c) must have passed. dev is the GPU; Device::CPU runs the same path (bf16
  // weights and activations, the same ops and roundings) on the host, which tests use to check
  // its logic without a device.
  GpuForward(const MlaMoeConfig& c, const RopeTable& rope, const std::vector<LayerWeights>& layers,
             const Tensor& final_norm, const Tensor& lm_head, Device dev = Device::CUDA);
  // A random model (random_weights.h) made in place on dev, every layer's indexer included
  // where the architecture has one: what the constructor above makes of random_layer_weights.
  GpuForward(const MlaMoeConfig& c, const RopeTable& rope, uint64_t seed, Device dev = Device::CUDA);
  Device device() const { return dev_; }
  // Model::set_phase_timing: synchronise around the indexer and attention and add their wall
  // time to ForwardStats (off: forward_layers never waits on the device for timing).
  void set_phase_timing(bool on) { phase_timing_ = on; }
  // The indexer in fp8 (ops/indexer.h's FP8 path, as DeepSeek's inference runs it): q per head
  // and each key quantised to e4m3 with one scale per row, the keys cached so (caches made after
  // the switch). Off (the default): bf16 q and keys, the closest the GPU gets to HF's reference.
  void set_indexer_fp8(bool on) { index_fp8_ = on; }
  bool indexer_fp8() const { return index_fp8_; }

  // Uploads the indexers of `pattern`'s F layers that the host holds and the GPU does not yet.
  void sync_indexers(const std::vector<LayerWeights>& layers, const LayerPattern& pattern);
  int64_t weight_bytes() const;
  std::unique_ptr<ModelCache> make_cache(int64_t capacity, const LayerPattern* pattern) const;

  // Model::forward_layers on the GPU: x F32 [n, hidden] on device(); the cache a GpuCache.
  void forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0, IndexReuse& reuse,
                      const GpuTap& tap, ForwardStats& stats);
  // Final norm and head: F32 [rows, vocab] on device().
  Tensor logits(const Tensor& x, const GpuTap& tap) const;
  void output_logits(const Tensor& x, float* logits, const GpuTap& tap) const;
  void output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out, const GpuTap& tap) const;

 private:
  GpuForward(const MlaMoeConfig& c, const RopeTable& rope, Device dev);  // tables and router only
  gpu::RopeArgs rope_args(MlaRope style) const;
  // q F32 [n, H, qk], RoPE applied; ql_bf receives the bf16 q latent (undefined without q LoRA).
  Tensor query(const GpuLayer& g, const Tensor& h_bf, int64_t p0, Tensor& ql_bf) const;
  void write_kv(const GpuLayer& g, const Tensor& h_bf, Tensor& kv, int64_t p0) const;
  // F layer l's indexer: writes the n keys, returns I32 [n, index_topk] on the GPU.
  Tensor select(int64_t l, const Tensor& h_bf, const Tensor& ql_bf, GpuCache& cache, int64_t p0,
                const GpuTap& tap) const;
  // x += o_proj(absorbed MLA of q over kv rows [0, T) through `sel`).
  void attend(const GpuLayer& g, const Tensor& q, const Tensor& kv, const Tensor& sel, Tensor& x) const;
  void ffn(int layer, const GpuLayer& g, Tensor& x, const GpuTap& tap) const;

  // Seconds since the epoch of steady_clock, after waiting for the device when timing phases.
  double phase_clock() const;

  MlaMoeConfig c_;
  Device dev_;
  bool phase_timing_ = false;
  bool index_fp8_ = false;
  Tensor inv_freq_;  // F32 [rope / 2] on the GPU
  double attention_factor_ = 1.0;
  ops::MoeRouterConfig router_;
  std::vector<GpuLayer> layers_;
  Tensor final_norm_, lm_head_;  // F32 [hidden], BF16 [vocab, hidden]
};

}  // namespace ic::dsa
