#pragma once
// The DSA family's configuration (MLA attention + DeepSeek MoE, with or without the DeepSeek
// sparse-attention indexer), read from an HF config.json exactly as transformers 5.17 reads it
// for three architectures:
//   DeepseekV32ForCausalLM  (model_type deepseek_v32)   MLA + MoE + indexer, half-split indexer RoPE
//   GlmMoeDsaForCausalLM    (model_type glm_moe_dsa)    the same with interleaved indexer RoPE and
//                                                       per-layer indexer_types (IndexCache)
//   Glm4MoeLiteForCausalLM  (model_type glm4_moe_lite)  dense MLA (no indexer), q_lora_rank may be null
// Every default below is the HF config class's default for that architecture; docs/FAMILY.md lists
// the keys read and what is refused.
#include <cstdint>
#include <string>
#include <vector>

namespace ic {

namespace hf {
class Config;
}

enum class DsaArch { DeepseekV32, GlmMoeDsa, Glm4MoeLite };

// How a rotary slice is laid out. Half: pairs (i, i + d/2), HF's rotate_half. Interleave: pairs
// (2i, 2i+1); HF's apply_rotary_pos_emb_interleave also writes its output de-interleaved (the
// rotated evens, then the rotated odds), and so do we, so that cached keys match HF's tensors.
enum class MlaRope { Half, Interleave };

// HF's rope_parameters (or the legacy rope_theta + rope_scaling): "default" or "yarn".
struct RopeScaling {
  std::string type = "default";  // rope_type ("type" in legacy configs)
  double theta = 10000.0;        // rope_theta
  double factor = 1.0;           // yarn
  int64_t original_max_positions = 0;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;  // 0 = absent
  double attention_factor = 0.0;              // 0 = derived (HF: from factor, mscale, mscale_all_dim)
  bool truncate = true;
};

struct MlaMoeConfig {
  DsaArch arch = DsaArch::DeepseekV32;
  std::string architecture;  // "DeepseekV32ForCausalLM", ...
  std::string model_type;    // "deepseek_v32", ...

  int64_t n_layers = 0;  // num_hidden_layers (MTP layers not counted)
  int64_t hidden = 0;
  int64_t vocab = 0;
  int64_t n_heads = 0;
  int64_t q_lora_rank = 0;  // 0: null in config.json, a plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;
  bool attention_bias = false;  // q_a_proj, kv_a_proj_with_mqa, o_proj (and q_proj) carry biases
  double rms_norm_eps = 1e-6;
  RopeScaling rope;
  MlaRope mla_rope = MlaRope::Interleave;  // the main attention's rope slice
  int64_t max_positions = 0;               // max_position_embeddings
  bool tie_word_embeddings = false;

  // MoE (DeepSeek-V3 router: sigmoid scores, correction bias for the choice, group-limited top-k).
  int64_t n_routed_experts = 0;
  int64_t n_experts_per_tok = 0;
  int64_t n_shared_experts = 0;
  int64_t moe_intermediate = 0;
  int64_t intermediate = 0;       // the dense layers' MLP
  int64_t n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  std::vector<bool> moe_layer;  // [n_layers]: true where mlp_layer_types says "sparse"

  // The DeepSeek indexer (has_indexer_arch() only).
  int64_t index_n_heads = 0, index_head_dim = 0, index_topk = 0;
  MlaRope index_rope = MlaRope::Half;  // on the leading qk_rope_dim dims of the indexer's q and k

  int64_t n_mtp_layers = 0;  // num_nextn_predict_layers: stored after the n_layers main layers

  bool has_indexer_arch() const { return arch != DsaArch::Glm4MoeLite; }
  int64_t qk_head_dim() const { return qk_nope_dim + qk_rope_dim; }
  // The attention softmax scale: qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 when the
  // rope type is not "default" and mscale_all_dim is set (HF's yarn_apply_mscale).
  double softmax_scale() const;

  // From config.json; throws ic::Error naming the file and key for an unknown architecture (the
  // message lists the supported ones), a missing or ill-typed key, or a value the HF classes cannot
  // run (num_key_value_heads != num_attention_heads, a scoring_func other than sigmoid, an
  // activation other than silu, partial rotary factors, rope types other than default and yarn).
  static MlaMoeConfig from_hf(const hf::Config& c);
  void validate(const std::string& where) const;
};

// The supported architectures as a message lists them.
std::string dsa_supported_architectures();

}  // namespace ic
