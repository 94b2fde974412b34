#include "model/dsa_family/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"

namespace ic {

namespace {

// The HF config class defaults of one architecture (transformers 5.17 configuration_*.py).
struct Defaults {
  const char* architecture;
  const char* model_type;
  DsaArch arch;
  int64_t vocab, hidden, intermediate, moe_intermediate, layers, heads, n_shared, n_routed;
  double routed_scaling;
  int64_t kv_lora, q_lora, rope, v, nope, n_group, topk_group, per_tok, max_pos;
  double rms_eps;
  int64_t index_topk, index_head_dim, index_n_heads, first_k_dense;
};

constexpr Defaults kArchs[] = {
    {"DeepseekV32ForCausalLM", "deepseek_v32", DsaArch::DeepseekV32, 129280, 7168, 18432, 2048, 61, 128, 1, 256, 2.5,
     512, 1536, 64, 128, 128, 8, 4, 8, 163840, 1e-6, 2048, 128, 64, 3},
    {"GlmMoeDsaForCausalLM", "glm_moe_dsa", DsaArch::GlmMoeDsa, 154880, 6144, 12288, 2048, 78, 64, 1, 256, 2.5, 512,
     2048, 64, 256, 192, 1, 1, 8, 202752, 1e-5, 2048, 128, 32, 3},
    // Glm4MoeLiteConfig has no first_k_dense_replace: its mlp_layer_types default is one dense
    // layer, then MoE, whatever config.json says under that key (first_k_dense = -1 marks it).
    {"Glm4MoeLiteForCausalLM", "glm4_moe_lite", DsaArch::Glm4MoeLite, 154880, 2048, 10240, 1536, 47, 20, 1, 64, 1.8,
     512, 768, 64, 256, 192, 1, 1, 4, 202752, 1e-5, 0, 0, 0, -1},
};

// Bounds far above any real model (DeepSeek-V3.2: 61 layers, hidden 7168, 256 experts, vocab
// 129280), so that a hostile config.json cannot make the loader allocate per-layer tables without
// end or overflow a product of shapes (E * 2I * H stays below 2^60).
constexpr int64_t kMaxLayers = kMaxPatternLayers;
constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxExperts = int64_t{1} << 16;

const Defaults* find_arch(const std::string& name) {
  for (const Defaults& d : kArchs)
    if (name == d.architecture) return &d;
  return nullptr;
}

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// HF's RotaryEmbeddingConfigMixin.convert_rope_params_to_dict + standardize_rope_params: the dict
// is "rope_scaling" or else "rope_parameters"; top-level rope_theta and partial_rotary_factor
// fill in what the dict lacks; a top-level original_max_position_embeddings overrides the dict's.
RopeScaling read_rope(const hf::Config& c, int64_t max_positions) {
  RopeScaling r;
  const bool legacy = c.has("rope_scaling");
  const std::string key = legacy ? "rope_scaling" : "rope_parameters";
  const double top_theta = c.get_float_or("rope_theta", 10000.0);
  IC_CHECK(c.get_float_or("partial_rotary_factor", 1.0) == 1.0,
           "{}: a partial_rotary_factor other than 1 is not supported (the rope slice is qk_rope_head_dim wide)",
           c.where("partial_rotary_factor"));
  if (!c.has(key)) {
    r.theta = top_theta;
    return r;
  }
  const hf::Config d = c.object(key);
  r.type = d.has("rope_type") ? d.get_string("rope_type") : d.get_string_or("type", "default");
  r.theta = d.get_float_or("rope_theta", top_theta);
  IC_CHECK(d.get_float_or("partial_rotary_factor", 1.0) == 1.0, "{}: a partial_rotary_factor other than 1 is not supported",
           d.where("partial_rotary_factor"));
  if (r.type == "default") return r;
  IC_CHECK(r.type == "yarn", "{}: rope type '{}' is not supported (default and yarn are)", d.where("rope_type"), r.type);
  r.original_max_positions = c.has("original_max_position_embeddings")
                                 ? c.get_int("original_max_position_embeddings")
                                 : d.get_int_or("original_max_position_embeddings", max_positions);
  IC_CHECK(r.original_max_positions > 0, "{}: must be positive, got {}", d.where("original_max_position_embeddings"),
           r.original_max_positions);
  IC_CHECK(d.json().contains("factor"), "{}: yarn needs a factor", d.where("factor"));
  // A null factor is HF's "max_position_embeddings / original_max_position_embeddings".
  r.factor = d.has("factor") ? d.get_float("factor")
                             : static_cast<double>(max_positions) / static_cast<double>(r.original_max_positions);
  IC_CHECK(r.factor > 0.0, "{}: must be positive, got {}", d.where("factor"), r.factor);
  // HF reads these with `or`: a 0 means the default as much as an absent key does.
  r.beta_fast = d.get_float_or("beta_fast", 0.0);
  r.beta_slow = d.get_float_or("beta_slow", 0.0);
  if (r.beta_fast == 0.0) r.beta_fast = 32.0;
  if (r.beta_slow == 0.0) r.beta_slow = 1.0;
  r.mscale = d.get_float_or("mscale", 0.0);
  r.mscale_all_dim = d.get_float_or("mscale_all_dim", 0.0);
  r.attention_factor = d.get_float_or("attention_factor", 0.0);
  r.truncate = d.get_bool_or("truncate", true);
  if (r.attention_factor == 0.0) {
    r.attention_factor = (r.mscale != 0.0 && r.mscale_all_dim != 0.0)
                             ? yarn_mscale(r.factor, r.mscale) / yarn_mscale(r.factor, r.mscale_all_dim)
                             : yarn_mscale(r.factor, 1.0);
  }
  return r;
}

std::vector<bool> read_moe_layers(const hf::Config& c, const Defaults& d, int64_t n_layers) {
  std::vector<bool> moe(static_cast<size_t>(n_layers), true);
  if (c.has("mlp_layer_types")) {
    const std::vector<std::string> types = c.get_strings("mlp_layer_types");
    IC_CHECK(static_cast<int64_t>(types.size()) == n_layers, "{}: {} entries for {} layers",
             c.where("mlp_layer_types"), types.size(), n_layers);
    for (size_t i = 0; i < types.size(); ++i) {
      IC_CHECK(types[i] == "dense" || types[i] == "sparse", "{}: entry {} is '{}', \"dense\" or \"sparse\" expected",
               c.where("mlp_layer_types"), i, types[i]);
      moe[i] = types[i] == "sparse";
    }
    return moe;
  }
  const int64_t first_dense = d.first_k_dense < 0 ? 1 : c.get_int_or("first_k_dense_replace", d.first_k_dense);
  IC_CHECK(first_dense >= 0, "{}: must be >= 0, got {}", c.where("first_k_dense_replace"), first_dense);
  for (int64_t l = 0; l < std::min(first_dense, n_layers); ++l) moe[static_cast<size_t>(l)] = false;
  return moe;
}

}  // namespace

std::string dsa_supported_architectures() {
  std::string s;
  for (const Defaults& d : kArchs) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", d.architecture, d.model_type);
  return s;
}

double MlaMoeConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope.type != "default" && rope.mscale_all_dim != 0.0) {
    const double m = yarn_mscale(rope.factor, rope.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

MlaMoeConfig MlaMoeConfig::from_hf(const hf::Config& c) {
  const std::string arch = c.architecture();
  const Defaults* d = find_arch(arch);
  IC_CHECK(d, "{}: architecture '{}' is not in the DSA family; supported: {}", c.where("architectures"), arch,
           dsa_supported_architectures());
  if (c.has("model_type"))
    IC_CHECK(c.get_string("model_type") == d->model_type, "{}: '{}' does not match architecture {} (model_type '{}')",
             c.where("model_type"), c.get_string("model_type"), arch, d->model_type);
  MlaMoeConfig m;
  m.arch = d->arch;
  m.architecture = d->architecture;
  m.model_type = d->model_type;
  m.n_layers = c.get_int_or("num_hidden_layers", d->layers);
  IC_CHECK(m.n_layers > 0 && m.n_layers <= kMaxLayers, "{}: {} layers, outside [1, {}]", c.where("num_hidden_layers"),
           m.n_layers, kMaxLayers);
  m.hidden = c.get_int_or("hidden_size", d->hidden);
  m.vocab = c.get_int_or("vocab_size", d->vocab);
  m.n_heads = c.get_int_or("num_attention_heads", d->heads);
  IC_CHECK(c.get_int_or("num_key_value_heads", m.n_heads) == m.n_heads,
           "{}: {} differs from num_attention_heads {}; MLA has one latent KV that every head reads, the HF "
           "classes need them equal", c.where("num_key_value_heads"), c.get_int("num_key_value_heads"), m.n_heads);
  // q_lora_rank: an explicit null means a plain q_proj (GLM-4.7-Flash style); absent, the default.
  if (c.json().contains("q_lora_rank") && !c.has("q_lora_rank"))
    m.q_lora_rank = 0;
  else
    m.q_lora_rank = c.get_int_or("q_lora_rank", d->q_lora);
  m.kv_lora_rank = c.get_int_or("kv_lora_rank", d->kv_lora);
  m.qk_nope_dim = c.get_int_or("qk_nope_head_dim", d->nope);
  m.qk_rope_dim = c.get_int_or("qk_rope_head_dim", d->rope);
  m.v_head_dim = c.get_int_or("v_head_dim", d->v);
  m.attention_bias = c.get_bool_or("attention_bias", false);
  m.rms_norm_eps = c.get_float_or("rms_norm_eps", d->rms_eps);
  m.max_positions = c.get_int_or("max_position_embeddings", d->max_pos);
  m.rope = read_rope(c, m.max_positions);
  // deepseek_v32 and glm_moe_dsa always run the interleaved form (their classes drop the
  // rope_interleave switch); glm4_moe_lite reads it.
  m.mla_rope = (m.arch != DsaArch::Glm4MoeLite || c.get_bool_or("rope_interleave", true)) ? MlaRope::Interleave
                                                                                         : MlaRope::Half;
  m.tie_word_embeddings = c.get_bool_or("tie_word_embeddings", false);

  m.n_routed_experts = c.get_int_or("n_routed_experts", d->n_routed);
  if (m.arch != DsaArch::Glm4MoeLite && c.has("num_experts")) m.n_routed_experts = c.get_int("num_experts");
  m.n_experts_per_tok = c.get_int_or("num_experts_per_tok", d->per_tok);
  m.n_shared_experts = c.get_int_or("n_shared_experts", d->n_shared);
  m.moe_intermediate = c.get_int_or("moe_intermediate_size", d->moe_intermediate);
  m.intermediate = c.get_int_or("intermediate_size", d->intermediate);
  m.n_group = c.get_int_or("n_group", d->n_group);
  m.topk_group = c.get_int_or("topk_group", d->topk_group);
  m.norm_topk_prob = c.get_bool_or("norm_topk_prob", true);
  m.routed_scaling_factor = c.get_float_or("routed_scaling_factor", d->routed_scaling);
  m.moe_layer = read_moe_layers(c, *d, m.n_layers);
  IC_CHECK(c.get_string_or("scoring_func", "sigmoid") == "sigmoid",
           "{}: '{}' is not supported (the HF classes score experts with a sigmoid)", c.where("scoring_func"),
           c.get_string("scoring_func"));
  IC_CHECK(c.get_string_or("hidden_act", "silu") == "silu", "{}: '{}' is not supported (silu is)", c.where("hidden_act"),
           c.get_string("hidden_act"));

  if (m.has_indexer_arch()) {
    m.index_n_heads = c.get_int_or("index_n_heads", d->index_n_heads);
    m.index_head_dim = c.get_int_or("index_head_dim", d->index_head_dim);
    m.index_topk = c.get_int_or("index_topk", d->index_topk);
    m.index_rope = m.arch == DsaArch::DeepseekV32 ? MlaRope::Half : MlaRope::Interleave;
  }
  m.n_mtp_layers = c.get_int_or("num_nextn_predict_layers", 0);
  m.validate(c.path());
  return m;
}

void MlaMoeConfig::validate(const std::string& where) const {
  auto positive = [&](const char* key, int64_t v, int64_t max = kMaxWidth) {
    IC_CHECK(v > 0 && v <= max, "{}: '{}' is {}, outside [1, {}]", where, key, v, max);
  };
  positive("num_hidden_layers", n_layers, kMaxLayers);
  positive("hidden_size", hidden);
  positive("vocab_size", vocab, kMaxVocab);
  positive("num_attention_heads", n_heads);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_dim);
  positive("qk_rope_head_dim", qk_rope_dim);
  positive("v_head_dim", v_head_dim);
  positive("max_position_embeddings", max_positions, int64_t{1} << 40);
  IC_CHECK(qk_rope_dim % 2 == 0, "{}: 'qk_rope_head_dim' must be even, got {}", where, qk_rope_dim);
  IC_CHECK(q_lora_rank >= 0 && q_lora_rank <= kMaxWidth, "{}: 'q_lora_rank' is {}, outside [1, {}] or null", where,
           q_lora_rank, kMaxWidth);
  IC_CHECK(rms_norm_eps > 0.0, "{}: 'rms_norm_eps' must be positive, got {}", where, rms_norm_eps);
  IC_CHECK(std::isfinite(rope.theta) && rope.theta > 0.0, "{}: 'rope_theta' must be positive, got {}", where,
           rope.theta);
  IC_CHECK(std::isfinite(rope.factor) && std::isfinite(rope.attention_factor) && std::isfinite(routed_scaling_factor),
           "{}: rope factor {}, attention factor {} and routed_scaling_factor {} must be finite", where, rope.factor,
           rope.attention_factor, routed_scaling_factor);
  IC_CHECK(n_mtp_layers >= 0 && n_mtp_layers <= kMaxLayers, "{}: 'num_nextn_predict_layers' is {}, outside [0, {}]",
           where, n_mtp_layers, kMaxLayers);
  bool any_dense = false, any_moe = false;
  for (bool b : moe_layer) (b ? any_moe : any_dense) = true;
  if (any_dense) positive("intermediate_size", intermediate);
  if (any_moe) {
    positive("n_routed_experts", n_routed_experts, kMaxExperts);
    positive("num_experts_per_tok", n_experts_per_tok);
    positive("moe_intermediate_size", moe_intermediate);
    positive("n_group", n_group);
    positive("topk_group", topk_group);
    IC_CHECK(n_shared_experts >= 0 && n_shared_experts <= kMaxExperts, "{}: 'n_shared_experts' is {}, outside [0, {}]",
             where, n_shared_experts, kMaxExperts);
    IC_CHECK(n_routed_experts % n_group == 0, "{}: n_routed_experts {} is not a multiple of n_group {}", where,
             n_routed_experts, n_group);
    // HF scores a group by the sum of its top two experts (topk(2) fails on smaller groups).
    IC_CHECK(n_routed_experts / n_group >= 2, "{}: {} experts in {} groups leave fewer than 2 per group", where,
             n_routed_experts, n_group);
    IC_CHECK(topk_group <= n_group, "{}: topk_group {} exceeds n_group {}", where, topk_group, n_group);
    IC_CHECK(n_experts_per_tok <= topk_group * (n_routed_experts / n_group),
             "{}: num_experts_per_tok {} exceeds the {} experts of the topk_group {} groups kept", where,
             n_experts_per_tok, topk_group * (n_routed_experts / n_group), topk_group);
  }
  if (has_indexer_arch()) {
    IC_CHECK(q_lora_rank > 0, "{}: {} needs a q_lora_rank (its indexer reads the query latent)", where, architecture);
    positive("index_n_heads", index_n_heads);
    positive("index_head_dim", index_head_dim);
    positive("index_topk", index_topk, int64_t{1} << 30);
    IC_CHECK(index_head_dim >= qk_rope_dim, "{}: index_head_dim {} is smaller than its rope slice qk_rope_head_dim {}",
             where, index_head_dim, qk_rope_dim);
  }
}

}  // namespace ic
