// Random GPU layers (gpu_weights.h: random_gpu_layer): the tensors upload_layer makes of
// random_layer_weights, filled in place on the device. Each fill names the HF tensor whose
// values it holds, so the two agree bitwise (tests/test_dsa_family_random.cpp).
#include <string>

#include "core/error.h"
#include "model/dsa_family/gpu_weights.h"
#include "model/dsa_family/random_weights.h"

namespace ic::dsa {

namespace {

struct Filler {
  uint64_t seed;
  Device dev;

  // BF16 `shape` holding tensor `name` (fan-in `fan_in`), times `post` after the f32 product.
  Tensor bf16(const std::string& name, const Shape& shape, int64_t fan_in, double post = 1.0) const {
    Tensor t = Tensor::empty(shape, DType::BF16, dev);
    fill_random(t, random_key(seed, name), random_bound(fan_in), 0, post);
    return t;
  }
  Tensor f32(const std::string& name, const Shape& shape, int64_t fan_in) const {
    Tensor t = Tensor::empty(shape, DType::F32, dev);
    fill_random(t, random_key(seed, name), random_bound(fan_in));
    return t;
  }
  Tensor value(const Shape& shape, float v) const {
    Tensor t = Tensor::empty(shape, DType::F32, dev);
    fill_value(t, v);
    return t;
  }
  GpuMlp mlp(const std::string& p, int64_t hidden, int64_t inter) const {
    return {bf16(p + "gate_proj.weight", {inter, hidden}, hidden), bf16(p + "up_proj.weight", {inter, hidden}, hidden),
            bf16(p + "down_proj.weight", {hidden, inter}, inter)};
  }
};

// Per head the transpose of kv_b's nope rows (gpu_weights.h: w_uk_t).
Tensor uk_transposed(const MlaMoeConfig& c, const Tensor& kv_b) {
  const int64_t H = c.n_heads, nope = c.qk_nope_dim, v = c.v_head_dim, L = c.kv_lora_rank;
  Tensor t = Tensor::empty({H * L, nope}, DType::BF16, kv_b.device());
  if (kv_b.device() == Device::CUDA) {
    cuda::uk_transpose(kv_b.data<uint16_t>(), H, nope, v, L, t.data<uint16_t>());
    return t;
  }
  const uint16_t* src = kv_b.data<uint16_t>();
  uint16_t* dst = t.data<uint16_t>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < nope; ++j)
      for (int64_t i = 0; i < L; ++i) dst[(h * L + i) * nope + j] = src[(h * (nope + v) + j) * L + i];
  return t;
}

// The routed experts stacked as upload_layer stacks them: [E, 2I, D] and [E, D, I].
void random_experts(const MlaMoeConfig& c, const Filler& f, const std::string& p, GpuLayer& g) {
  const int64_t E = c.n_routed_experts, I = c.moe_intermediate, D = c.hidden;
  g.gate_up = Tensor::empty({E, 2 * I, D}, DType::BF16, f.dev);
  g.down = Tensor::empty({E, D, I}, DType::BF16, f.dev);
  const Tensor gu = g.gate_up.reshape({E * 2 * I, D}), dn = g.down.reshape({E * D, I});
  for (int64_t e = 0; e < E; ++e) {
    const std::string ep = fmt::format("{}mlp.experts.{}.", p, e);
    Tensor gate = gu.slice_rows(2 * e * I, (2 * e + 1) * I), up = gu.slice_rows((2 * e + 1) * I, (2 * e + 2) * I);
    Tensor down = dn.slice_rows(e * D, (e + 1) * D);
    fill_random(gate, random_key(f.seed, ep + "gate_proj.weight"), random_bound(D));
    fill_random(up, random_key(f.seed, ep + "up_proj.weight"), random_bound(D));
    fill_random(down, random_key(f.seed, ep + "down_proj.weight"), random_bound(I));
  }
}

}  // namespace

GpuLayer random_gpu_layer(const MlaMoeConfig& c, uint64_t seed, int64_t l, Device dev) {
  const Filler f{seed, dev};
  const std::string p = layer_prefix(l), a = p + "self_attn.";
  const int64_t H = c.n_heads, D = c.hidden, L = c.kv_lora_rank, R = c.qk_rope_dim;
  const bool bias = c.attention_bias;
  GpuLayer g;
  g.input_norm = f.value({D}, 1.0f);
  g.post_norm = f.value({D}, 1.0f);
  if (c.q_lora_rank > 0) {
    g.q_a = f.bf16(a + "q_a_proj.weight", {c.q_lora_rank, D}, D);
    if (bias) g.q_a_bias = f.value({c.q_lora_rank}, 0.0f);
    g.q_a_norm = f.value({c.q_lora_rank}, 1.0f);
    g.q_b = f.bf16(a + "q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank}, c.q_lora_rank);
  } else {
    g.q_proj = f.bf16(a + "q_proj.weight", {H * c.qk_head_dim(), D}, D);
  }
  g.kv_a = f.bf16(a + "kv_a_proj_with_mqa.weight", {L + R, D}, D);
  if (bias) g.kv_a_bias = f.value({L + R}, 0.0f);
  g.kv_a_norm = f.value({L}, 1.0f);
  g.kv_b = f.bf16(a + "kv_b_proj.weight", {H * (c.qk_nope_dim + c.v_head_dim), L}, L);
  g.w_uk_t = uk_transposed(c, g.kv_b);
  g.o = f.bf16(a + "o_proj.weight", {D, H * c.v_head_dim}, H * c.v_head_dim);
  if (bias) g.o_bias = f.value({D}, 0.0f);
  if (c.has_indexer_arch()) {
    const std::string ip = a + "indexer.";
    const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
    IC_CHECK(c.q_lora_rank > 0, "random weights: the indexer needs q_lora_rank > 0");
    g.indexer.wq_b = f.bf16(ip + "wq_b.weight", {Hi * Di, c.q_lora_rank}, c.q_lora_rank);
    g.indexer.wk = f.bf16(ip + "wk.weight", {Di, D}, D);
    g.indexer.k_norm = f.value({Di}, 1.0f);
    g.indexer.k_bias = f.value({Di}, 0.0f);
    g.indexer.weights = f.bf16(ip + "weights_proj.weight", {Hi, D}, D, indexer_weight_scale(c));
  }
  g.moe = c.moe_layer[static_cast<size_t>(l)];
  if (!g.moe) {
    g.mlp = f.mlp(p + "mlp.", D, c.intermediate);
    return g;
  }
  g.router = f.f32(p + "mlp.gate.weight", {c.n_routed_experts, D}, D);
  g.router_bias = f.value({c.n_routed_experts}, 0.0f);
  random_experts(c, f, p, g);
  if (c.n_shared_experts > 0) g.shared = f.mlp(p + "mlp.shared_experts.", D, c.moe_intermediate * c.n_shared_experts);
  return g;
}

}  // namespace ic::dsa
