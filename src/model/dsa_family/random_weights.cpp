#include "model/dsa_family/random_weights.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace ic::dsa {

namespace {

float value_at(uint64_t key, int64_t i, float a, double post) {
  return static_cast<float>(static_cast<double>(random_unit(key, static_cast<uint64_t>(i)) * a) * post);
}

// F32 host tensor of `shape` filled as the tensor `name` with fan-in `fan_in`.
Tensor host_random(uint64_t seed, const std::string& name, const Shape& shape, int64_t fan_in) {
  Tensor t = Tensor::empty(shape, DType::F32);
  fill_random(t, random_key(seed, name), random_bound(fan_in));
  return t;
}

Tensor host_value(const Shape& shape, float v) {
  Tensor t = Tensor::empty(shape, DType::F32);
  fill_value(t, v);
  return t;
}

MlpWeights host_mlp(uint64_t seed, const std::string& p, int64_t hidden, int64_t inter) {
  return {host_random(seed, p + "gate_proj.weight", {inter, hidden}, hidden),
          host_random(seed, p + "up_proj.weight", {inter, hidden}, hidden),
          host_random(seed, p + "down_proj.weight", {hidden, inter}, inter)};
}

}  // namespace

uint64_t random_key(uint64_t seed, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (const char ch : name) h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
  return mix64(seed ^ mix64(h));
}

float random_bound(int64_t fan_in) {
  IC_ASSERT(fan_in > 0);
  return static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in)));
}

void fill_random(Tensor& t, uint64_t key, float a, int64_t i0, double post) {
  IC_CHECK(t.dtype() == DType::BF16 || t.dtype() == DType::F32, "fill_random: {} must be BF16 or F32", t.desc());
  const int64_t n = t.numel();
  if (t.device() == Device::CUDA) {
    if (t.dtype() == DType::BF16) return cuda::fill_random_bf16(t.data<uint16_t>(), n, key, a, i0, post);
    return cuda::fill_random_f32(t.data<float>(), n, key, a, i0, post);
  }
  if (t.dtype() == DType::BF16) {
    uint16_t* d = t.data<uint16_t>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(value_at(key, i0 + i, a, post));
    return;
  }
  float* d = t.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = value_at(key, i0 + i, a, post);
}

void fill_value(Tensor& t, float v) {
  IC_CHECK(t.dtype() == DType::F32, "fill_value: {} must be F32", t.desc());
  if (t.device() == Device::CUDA) return cuda::fill_value_f32(t.data<float>(), t.numel(), v);
  std::fill_n(t.data<float>(), t.numel(), v);
}

LayerWeights random_layer_weights(const MlaMoeConfig& c, uint64_t seed, int64_t l) {
  const std::string p = layer_prefix(l), a = p + "self_attn.";
  const int64_t H = c.n_heads, D = c.hidden, L = c.kv_lora_rank, R = c.qk_rope_dim;
  const bool bias = c.attention_bias;
  LayerWeights w;
  w.input_norm = host_value({D}, 1.0f);
  w.post_norm = host_value({D}, 1.0f);
  MlaWeights& m = w.attn;
  if (c.q_lora_rank > 0) {
    m.q_a = host_random(seed, a + "q_a_proj.weight", {c.q_lora_rank, D}, D);
    if (bias) m.q_a_bias = host_value({c.q_lora_rank}, 0.0f);
    m.q_a_norm = host_value({c.q_lora_rank}, 1.0f);
    m.q_b = host_random(seed, a + "q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank}, c.q_lora_rank);
  } else {
    m.q_proj = host_random(seed, a + "q_proj.weight", {H * c.qk_head_dim(), D}, D);
  }
  m.kv_a = host_random(seed, a + "kv_a_proj_with_mqa.weight", {L + R, D}, D);
  if (bias) m.kv_a_bias = host_value({L + R}, 0.0f);
  m.kv_a_norm = host_value({L}, 1.0f);
  m.kv_b = host_random(seed, a + "kv_b_proj.weight", {H * (c.qk_nope_dim + c.v_head_dim), L}, L);
  m.o = host_random(seed, a + "o_proj.weight", {D, H * c.v_head_dim}, H * c.v_head_dim);
  if (bias) m.o_bias = host_value({D}, 0.0f);
  if (c.has_indexer_arch()) {
    const std::string ip = a + "indexer.";
    const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
    IC_CHECK(c.q_lora_rank > 0, "random weights: the indexer needs q_lora_rank > 0");
    w.indexer.wq_b = host_random(seed, ip + "wq_b.weight", {Hi * Di, c.q_lora_rank}, c.q_lora_rank);
    w.indexer.wk = host_random(seed, ip + "wk.weight", {Di, D}, D);
    w.indexer.k_norm = host_value({Di}, 1.0f);
    w.indexer.k_bias = host_value({Di}, 0.0f);
    w.indexer.weights_proj = host_random(seed, ip + "weights_proj.weight", {Hi, D}, D);
  }
  w.moe = c.moe_layer[static_cast<size_t>(l)];
  if (!w.moe) {
    w.mlp = host_mlp(seed, p + "mlp.", D, c.intermediate);
    return w;
  }
  MoeWeights& e = w.experts;
  e.router = host_random(seed, p + "mlp.gate.weight", {c.n_routed_experts, D}, D);
  e.router_bias = host_value({c.n_routed_experts}, 0.0f);
  e.experts.reserve(static_cast<size_t>(c.n_routed_experts));
  for (int64_t x = 0; x < c.n_routed_experts; ++x)
    e.experts.push_back(host_mlp(seed, fmt::format("{}mlp.experts.{}.", p, x), D, c.moe_intermediate));
  if (c.n_shared_experts > 0) e.shared = host_mlp(seed, p + "mlp.shared_experts.", D, c.moe_intermediate * c.n_shared_experts);
  return w;
}

Tensor random_embedding(const MlaMoeConfig& c, uint64_t seed) {
  Tensor t = Tensor::empty({c.vocab, c.hidden}, DType::F32);
  fill_random(t, random_key(seed, "model.embed_tokens.weight"), 1.0f);
  return t;
}

Tensor random_lm_head(const MlaMoeConfig& c, uint64_t seed) {
  if (c.tie_word_embeddings) return random_embedding(c, seed);
  return host_random(seed, "lm_head.weight", {c.vocab, c.hidden}, c.hidden);
}

}  // namespace ic::dsa
