#pragma once
// Tiny random HF folders of the DSA family for tests, written here (config.json + one
// model.safetensors in the checkpoint's own names and [out, in] layouts, f32), and the helpers the
// DSA family's tests share.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace ic::test {

namespace fs = std::filesystem;

// The shared helpers under the names the DSA family tests use.
#define EXPECT_DSA_ERROR(stmt, substr) EXPECT_IC_ERROR(stmt, substr)
using TempFolder = TempDir;

// A small model of one architecture; every field goes to config.json under HF's key.
struct TinySpec {
  std::string architecture = "DeepseekV32ForCausalLM";
  std::string model_type = "deepseek_v32";
  int64_t layers = 4, hidden = 48, vocab = 64, heads = 3;
  int64_t q_lora = 24;  // 0: null (a plain q_proj)
  int64_t kv_lora = 20, nope = 12, rope = 8, v = 10;
  int64_t experts = 8, per_tok = 2, shared = 1, moe_inter = 16, inter = 40, n_group = 4, topk_group = 2;
  int64_t first_dense = 1;
  int64_t index_heads = 4, index_dim = 16, index_topk = 5;
  int64_t max_pos = 256;
  double routed_scaling = 2.5;
  bool yarn = true;       // rope_scaling yarn (factor 4, original 64, mscale 1, mscale_all_dim 0.8)
  bool fused_experts = false;  // transformers' stacked gate_up_proj / down_proj instead of per expert
  nlohmann::json extra = nlohmann::json::object();  // merged into config.json last

  static TinySpec glm() {
    TinySpec s;
    s.architecture = "GlmMoeDsaForCausalLM";
    s.model_type = "glm_moe_dsa";
    s.n_group = 1;
    s.topk_group = 1;
    s.yarn = false;
    return s;
  }
  static TinySpec lite() {
    TinySpec s;
    s.architecture = "Glm4MoeLiteForCausalLM";
    s.model_type = "glm4_moe_lite";
    s.layers = 3;
    s.q_lora = 0;
    s.n_group = 2;
    s.topk_group = 1;
    s.yarn = false;
    return s;
  }

  nlohmann::json config() const {
    nlohmann::json c = {
        {"architectures", {architecture}}, {"model_type", model_type}, {"num_hidden_layers", layers},
        {"hidden_size", hidden}, {"vocab_size", vocab}, {"num_attention_heads", heads},
        {"num_key_value_heads", heads}, {"kv_lora_rank", kv_lora}, {"qk_nope_head_dim", nope},
        {"qk_rope_head_dim", rope}, {"v_head_dim", v}, {"n_routed_experts", experts},
        {"num_experts_per_tok", per_tok}, {"n_shared_experts", shared}, {"moe_intermediate_size", moe_inter},
        {"intermediate_size", inter}, {"n_group", n_group}, {"topk_group", topk_group},
        {"norm_topk_prob", true}, {"routed_scaling_factor", routed_scaling}, {"rms_norm_eps", 1e-6},
        {"max_position_embeddings", max_pos}, {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
    c["q_lora_rank"] = q_lora > 0 ? nlohmann::json(q_lora) : nlohmann::json(nullptr);
    std::vector<std::string> mlp;
    for (int64_t l = 0; l < layers; ++l) mlp.push_back(l < first_dense ? "dense" : "sparse");
    c["mlp_layer_types"] = mlp;
    if (model_type != "glm4_moe_lite") {
      c["index_n_heads"] = index_heads;
      c["index_head_dim"] = index_dim;
      c["index_topk"] = index_topk;
    }
    if (yarn)
      c["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0},
                              {"original_max_position_embeddings", 64}, {"beta_fast", 32.0},
                              {"beta_slow", 1.0}, {"mscale", 1.0}, {"mscale_all_dim", 0.8}};
    else
      c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
    c.update(extra);
    return c;
  }
};

// name -> F32 tensor, in a stable order.
using TensorMap = std::map<std::string, Tensor>;

inline Tensor random_tensor(std::vector<int64_t> dims, std::mt19937& rng, double scale, double offset = 0.0) {
  Shape s;
  s.rank = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) s.dims[i] = dims[i];
  Tensor t = Tensor::empty(s, DType::F32);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(offset + scale * nd(rng));
  return t;
}

// Every tensor of the spec's checkpoint, random: projections N(0, 1/fan_in), norms 1 + N(0, 0.25^2),
// biases N(0, 0.1^2), the embedding N(0, 1).
inline TensorMap tiny_weights(const TinySpec& s, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  TensorMap m;
  auto proj = [&](const std::string& name, int64_t out, int64_t in) {
    m[name] = random_tensor({out, in}, rng, 1.0 / std::sqrt(static_cast<double>(in)));
  };
  auto norm = [&](const std::string& name, int64_t d) { m[name] = random_tensor({d}, rng, 0.25, 1.0); };
  auto mlp = [&](const std::string& p, int64_t inter) {
    proj(p + "gate_proj.weight", inter, s.hidden);
    proj(p + "up_proj.weight", inter, s.hidden);
    proj(p + "down_proj.weight", s.hidden, inter);
  };
  m["model.embed_tokens.weight"] = random_tensor({s.vocab, s.hidden}, rng, 1.0);
  norm("model.norm.weight", s.hidden);
  proj("lm_head.weight", s.vocab, s.hidden);
  const int64_t qk = s.nope + s.rope;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l), a = p + "self_attn.";
    norm(p + "input_layernorm.weight", s.hidden);
    norm(p + "post_attention_layernorm.weight", s.hidden);
    if (s.q_lora > 0) {
      proj(a + "q_a_proj.weight", s.q_lora, s.hidden);
      norm(a + "q_a_layernorm.weight", s.q_lora);
      proj(a + "q_b_proj.weight", s.heads * qk, s.q_lora);
    } else {
      proj(a + "q_proj.weight", s.heads * qk, s.hidden);
    }
    proj(a + "kv_a_proj_with_mqa.weight", s.kv_lora + s.rope, s.hidden);
    norm(a + "kv_a_layernorm.weight", s.kv_lora);
    proj(a + "kv_b_proj.weight", s.heads * (s.nope + s.v), s.kv_lora);
    proj(a + "o_proj.weight", s.hidden, s.heads * s.v);
    if (s.model_type != "glm4_moe_lite") {
      const std::string ix = a + "indexer.";
      proj(ix + "wq_b.weight", s.index_heads * s.index_dim, s.q_lora);
      proj(ix + "wk.weight", s.index_dim, s.hidden);
      norm(ix + "k_norm.weight", s.index_dim);
      m[ix + "k_norm.bias"] = random_tensor({s.index_dim}, rng, 0.1);
      proj(ix + "weights_proj.weight", s.index_heads, s.hidden);
    }
    if (l < s.first_dense) {
      mlp(p + "mlp.", s.inter);
      continue;
    }
    m[p + "mlp.gate.weight"] = random_tensor({s.experts, s.hidden}, rng, 2.0 / std::sqrt(double(s.hidden)));
    m[p + "mlp.gate.e_score_correction_bias"] = random_tensor({s.experts}, rng, 0.1);
    if (s.fused_experts) {
      m[p + "mlp.experts.gate_up_proj"] =
          random_tensor({s.experts, 2 * s.moe_inter, s.hidden}, rng, 1.0 / std::sqrt(double(s.hidden)));
      m[p + "mlp.experts.down_proj"] =
          random_tensor({s.experts, s.hidden, s.moe_inter}, rng, 1.0 / std::sqrt(double(s.moe_inter)));
    } else {
      for (int64_t e = 0; e < s.experts; ++e) mlp(fmt::format("{}mlp.experts.{}.", p, e), s.moe_inter);
    }
    if (s.shared > 0) mlp(p + "mlp.shared_experts.", s.moe_inter * s.shared);
  }
  return m;
}

inline void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Writes config.json and model.safetensors of `weights` into `dir`.
inline void write_folder(const std::string& dir, const nlohmann::json& config, const TensorMap& weights) {
  write_text_file(dir + "/config.json", config.dump(2));
  safetensors::Writer w;
  for (const auto& [name, t] : weights) w.add(name, t);
  w.write(dir + "/model.safetensors");
}

}  // namespace ic::test
