#include "model/dsa_family/weights.h"

#include <cstring>

#include "core/error.h"
#include "io/hf_folder.h"

namespace ic::dsa {

namespace {

Tensor read(const hf::Folder& f, const std::string& name, std::vector<int64_t> shape) {
  IC_CHECK(f.has(name), "{}: tensor '{}' is missing from the checkpoint", f.dir(), name);
  return f.read_f32(name, shape);
}

Tensor read_if(const hf::Folder& f, bool present, const std::string& name, std::vector<int64_t> shape) {
  return present ? read(f, name, std::move(shape)) : Tensor();
}

MlpWeights read_mlp(const hf::Folder& f, const std::string& p, int64_t hidden, int64_t inter) {
  return {read(f, p + "gate_proj.weight", {inter, hidden}), read(f, p + "up_proj.weight", {inter, hidden}),
          read(f, p + "down_proj.weight", {hidden, inter})};
}

// Rows [r0, r0 + rows) of matrix e of a stacked [E, R, C] tensor, as a new [rows, C] tensor.
Tensor expert_rows(const Tensor& stacked, int64_t e, int64_t r0, int64_t rows) {
  const int64_t R = stacked.dim(1), C = stacked.dim(2);
  Tensor t = Tensor::empty({rows, C}, DType::F32);
  std::memcpy(t.data<float>(), stacked.data<float>() + (e * R + r0) * C, static_cast<size_t>(rows * C) * 4);
  return t;
}

// Routed experts: DeepSeek's per-expert tensors (mlp.experts.<e>.{gate,up,down}_proj.weight), or
// transformers' fused form (mlp.experts.gate_up_proj [E, 2I, H], gate rows first, and
// mlp.experts.down_proj [E, H, I]).
std::vector<MlpWeights> read_experts(const hf::Folder& f, const std::string& p, const MlaMoeConfig& c) {
  const int64_t E = c.n_routed_experts, H = c.hidden, I = c.moe_intermediate;
  std::vector<MlpWeights> out(static_cast<size_t>(E));
  if (f.has(p + "gate_up_proj")) {
    const Tensor gu = read(f, p + "gate_up_proj", {E, 2 * I, H});
    const Tensor dn = read(f, p + "down_proj", {E, H, I});
    for (int64_t e = 0; e < E; ++e)
      out[e] = {expert_rows(gu, e, 0, I), expert_rows(gu, e, I, I), expert_rows(dn, e, 0, H)};
    return out;
  }
  for (int64_t e = 0; e < E; ++e) out[e] = read_mlp(f, fmt::format("{}{}.", p, e), H, I);
  return out;
}

int64_t bytes_of(const Tensor& t) { return t.defined() ? t.nbytes() : 0; }
int64_t bytes_of(const MlpWeights& m) { return bytes_of(m.gate) + bytes_of(m.up) + bytes_of(m.down); }

}  // namespace

std::string layer_prefix(int64_t l) { return fmt::format("model.layers.{}.", l); }

LayerWeights load_layer(const hf::Folder& f, const MlaMoeConfig& c, int64_t l) {
  const std::string p = layer_prefix(l);
  const std::string a = p + "self_attn.";
  const int64_t H = c.n_heads, D = c.hidden;
  const bool bias = c.attention_bias;
  LayerWeights L;
  L.input_norm = read(f, p + "input_layernorm.weight", {D});
  L.post_norm = read(f, p + "post_attention_layernorm.weight", {D});
  MlaWeights& m = L.attn;
  if (c.q_lora_rank > 0) {
    m.q_a = read(f, a + "q_a_proj.weight", {c.q_lora_rank, D});
    m.q_a_bias = read_if(f, bias, a + "q_a_proj.bias", {c.q_lora_rank});
    m.q_a_norm = read(f, a + "q_a_layernorm.weight", {c.q_lora_rank});
    m.q_b = read(f, a + "q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank});
  } else {
    m.q_proj = read(f, a + "q_proj.weight", {H * c.qk_head_dim(), D});
  }
  m.kv_a = read(f, a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_dim, D});
  m.kv_a_bias = read_if(f, bias, a + "kv_a_proj_with_mqa.bias", {c.kv_lora_rank + c.qk_rope_dim});
  m.kv_a_norm = read(f, a + "kv_a_layernorm.weight", {c.kv_lora_rank});
  m.kv_b = read(f, a + "kv_b_proj.weight", {H * (c.qk_nope_dim + c.v_head_dim), c.kv_lora_rank});
  m.o = read(f, a + "o_proj.weight", {D, H * c.v_head_dim});
  m.o_bias = read_if(f, bias, a + "o_proj.bias", {D});

  L.moe = c.moe_layer[static_cast<size_t>(l)];
  if (!L.moe) {
    L.mlp = read_mlp(f, p + "mlp.", D, c.intermediate);
    return L;
  }
  MoeWeights& e = L.experts;
  e.router = read(f, p + "mlp.gate.weight", {c.n_routed_experts, D});
  e.router_bias = read(f, p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts});
  e.experts = read_experts(f, p + "mlp.experts.", c);
  if (c.n_shared_experts > 0) e.shared = read_mlp(f, p + "mlp.shared_experts.", D, c.moe_intermediate * c.n_shared_experts);
  return L;
}

bool folder_has_indexer(const hf::Folder& f, int64_t l) {
  const std::string p = layer_prefix(l) + "self_attn.indexer.";
  for (const char* n : {"wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight"})
    if (!f.has(p + n)) return false;
  return true;
}

IndexerWeights load_indexer(const hf::Folder& f, const MlaMoeConfig& c, int64_t l) {
  IC_ASSERT(c.has_indexer_arch());
  const std::string p = layer_prefix(l) + "self_attn.indexer.";
  const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
  IndexerWeights w;
  w.wq_b = read(f, p + "wq_b.weight", {Hi * Di, c.q_lora_rank});
  w.wk = read(f, p + "wk.weight", {Di, c.hidden});
  w.k_norm = read(f, p + "k_norm.weight", {Di});
  w.k_bias = read(f, p + "k_norm.bias", {Di});
  w.weights_proj = read(f, p + "weights_proj.weight", {Hi, c.hidden});
  return w;
}

int64_t indexer_bytes(const IndexerWeights& w) {
  return bytes_of(w.wq_b) + bytes_of(w.wk) + bytes_of(w.k_norm) + bytes_of(w.k_bias) + bytes_of(w.weights_proj);
}

int64_t LayerWeights::bytes() const {
  const MlaWeights& m = attn;
  int64_t b = bytes_of(input_norm) + bytes_of(post_norm);
  for (const Tensor* t : {&m.q_proj, &m.q_a, &m.q_a_bias, &m.q_a_norm, &m.q_b, &m.kv_a, &m.kv_a_bias, &m.kv_a_norm,
                          &m.kv_b, &m.o, &m.o_bias})
    b += bytes_of(*t);
  b += indexer_bytes(indexer) + bytes_of(mlp) + bytes_of(experts.router) + bytes_of(experts.router_bias) +
       bytes_of(experts.shared);
  for (const MlpWeights& e : experts.experts) b += bytes_of(e);
  return b;
}

}  // namespace ic::dsa
