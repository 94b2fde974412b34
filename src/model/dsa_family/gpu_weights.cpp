#include "model/dsa_family/gpu_weights.h"

#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/moe_route.h"
#include "ops/sparse_mla.h"
#include "ops/topk.h"

namespace ic::dsa {

namespace {

int64_t bytes_of(const Tensor& t) { return t.defined() ? t.nbytes() : 0; }
int64_t bytes_of(const GpuMlp& m) { return bytes_of(m.gate) + bytes_of(m.up) + bytes_of(m.down); }

GpuMlp upload_mlp(const MlpWeights& m, Device dev) {
  if (!m.defined()) return {};
  return {upload_bf16(m.gate, dev), upload_bf16(m.up, dev), upload_bf16(m.down, dev)};
}

// Per head h, the transpose of kv_b's nope rows [h * (nope + v), + nope) x L: [L, nope].
Tensor uk_transposed(const MlaMoeConfig& c, const Tensor& kv_b, Device dev) {
  const int64_t H = c.n_heads, nope = c.qk_nope_dim, v = c.v_head_dim, L = c.kv_lora_rank;
  Tensor t = Tensor::empty({H * L, nope}, DType::F32);
  const float* src = kv_b.data<float>();
  float* dst = t.data<float>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < nope; ++j)
      for (int64_t i = 0; i < L; ++i) dst[(h * L + i) * nope + j] = src[(h * (nope + v) + j) * L + i];
  return upload_bf16(t, dev);
}

// The routed experts stacked: [E, 2I, D] (gate rows, then up rows) and [E, D, I].
void stack_experts(const MlaMoeConfig& c, const MoeWeights& w, GpuLayer& g, Device dev) {
  const int64_t E = c.n_routed_experts, I = c.moe_intermediate, D = c.hidden;
  Tensor gu = Tensor::empty({E, 2 * I, D}, DType::F32), dn = Tensor::empty({E, D, I}, DType::F32);
  const size_t block = static_cast<size_t>(I * D) * sizeof(float);
  for (int64_t e = 0; e < E; ++e) {
    const MlpWeights& m = w.experts[static_cast<size_t>(e)];
    std::memcpy(gu.data<float>() + e * 2 * I * D, m.gate.data<float>(), block);
    std::memcpy(gu.data<float>() + (e * 2 + 1) * I * D, m.up.data<float>(), block);
    std::memcpy(dn.data<float>() + e * D * I, m.down.data<float>(), block);
  }
  g.gate_up = upload_bf16(gu, dev);
  g.down = upload_bf16(dn, dev);
}

}  // namespace

void check_gpu_dims(const MlaMoeConfig& c, const std::string& dir) {
  IC_CHECK(c.kv_lora_rank + c.qk_rope_dim == ops::kMlaDimQK && c.kv_lora_rank == ops::kMlaDimV,
           "{}: the DSA family runs on the CPU reference path only so far for these dims: the checkpoint has "
           "kv_lora_rank {} + qk_rope_head_dim {}, the GPU path's sparse MLA kernels (ops/sparse_mla.h) are built "
           "for kv_lora_rank {} + qk_rope_head_dim {} (the real models' dims)", dir, c.kv_lora_rank, c.qk_rope_dim,
           ops::kMlaDimV, ops::kMlaDimQK - ops::kMlaDimV);
  if (c.has_indexer_arch()) {
    IC_CHECK((c.index_head_dim == 64 || c.index_head_dim == 128) && c.index_n_heads >= 1 && c.index_n_heads <= 64,
             "{}: the DSA family runs on the CPU reference path only so far for these dims: the checkpoint's "
             "indexer has index_n_heads {} x index_head_dim {}, the GPU indexer (ops/indexer.h) takes 1 to 64 heads "
             "of 64 or 128 dims", dir, c.index_n_heads, c.index_head_dim);
    IC_CHECK(c.qk_rope_dim <= c.index_head_dim, "{}: qk_rope_head_dim {} exceeds index_head_dim {}", dir,
             c.qk_rope_dim, c.index_head_dim);
    IC_CHECK(c.index_topk >= 1 && c.index_topk <= ops::cuda::kTopkMaxK,
             "{}: index_topk {} is outside the GPU top-k's [1, {}]", dir, c.index_topk, ops::cuda::kTopkMaxK);
  }
  if (c.n_routed_experts > 0)
    IC_CHECK(c.n_routed_experts <= ops::cuda::kMoeRouteMaxExperts, "{}: {} routed experts exceed the GPU router's {}",
             dir, c.n_routed_experts, ops::cuda::kMoeRouteMaxExperts);
}

Tensor upload_bf16(const Tensor& host_f32, Device dev) {
  if (!host_f32.defined()) return {};
  IC_ASSERT(host_f32.dtype() == DType::F32 && host_f32.device() == Device::CPU);
  Tensor b = Tensor::empty(host_f32.shape(), DType::BF16);
  const float* s = host_f32.data<float>();
  uint16_t* d = b.data<uint16_t>();
  for (int64_t i = 0; i < host_f32.numel(); ++i) d[i] = f32_to_bf16(s[i]);
  return dev == Device::CPU ? b : b.to(dev);
}

Tensor upload_f32(const Tensor& host_f32, Device dev) { return host_f32.defined() ? host_f32.to(dev) : Tensor(); }

double indexer_weight_scale(const MlaMoeConfig& c) {
  return 1.0 / std::sqrt(static_cast<double>(c.index_n_heads) * static_cast<double>(c.index_head_dim));
}

GpuIndexer upload_indexer(const MlaMoeConfig& c, const IndexerWeights& w, Device dev) {
  if (!w.loaded()) return {};
  const double scale = indexer_weight_scale(c);
  Tensor wp = Tensor::empty(w.weights_proj.shape(), DType::F32);
  for (int64_t i = 0; i < wp.numel(); ++i)
    wp.data<float>()[i] = static_cast<float>(w.weights_proj.data<float>()[i] * scale);
  return {upload_bf16(w.wq_b, dev), upload_bf16(w.wk, dev), upload_f32(w.k_norm, dev), upload_f32(w.k_bias, dev),
          upload_bf16(wp, dev)};
}

GpuLayer upload_layer(const MlaMoeConfig& c, const LayerWeights& w, Device dev) {
  GpuLayer g;
  g.input_norm = upload_f32(w.input_norm, dev);
  g.post_norm = upload_f32(w.post_norm, dev);
  const MlaWeights& a = w.attn;
  g.q_proj = upload_bf16(a.q_proj, dev);
  g.q_a = upload_bf16(a.q_a, dev);
  g.q_b = upload_bf16(a.q_b, dev);
  g.q_a_bias = upload_f32(a.q_a_bias, dev);
  g.q_a_norm = upload_f32(a.q_a_norm, dev);
  g.kv_a = upload_bf16(a.kv_a, dev);
  g.kv_a_bias = upload_f32(a.kv_a_bias, dev);
  g.kv_a_norm = upload_f32(a.kv_a_norm, dev);
  g.kv_b = upload_bf16(a.kv_b, dev);
  g.w_uk_t = uk_transposed(c, a.kv_b, dev);
  g.o = upload_bf16(a.o, dev);
  g.o_bias = upload_f32(a.o_bias, dev);
  g.indexer = upload_indexer(c, w.indexer, dev);
  g.moe = w.moe;
  if (!w.moe) {
    g.mlp = upload_mlp(w.mlp, dev);
    return g;
  }
  g.router = upload_f32(w.experts.router, dev);
  g.router_bias = upload_f32(w.experts.router_bias, dev);
  stack_experts(c, w.experts, g, dev);
  g.shared = upload_mlp(w.experts.shared, dev);
  return g;
}

int64_t GpuLayer::bytes() const {
  int64_t b = 0;
  for (const Tensor* t : {&input_norm, &post_norm, &q_proj, &q_a, &q_b, &q_a_bias, &q_a_norm, &kv_a, &kv_a_bias,
                          &kv_a_norm, &kv_b, &w_uk_t, &o, &o_bias, &indexer.wq_b, &indexer.wk, &indexer.k_norm,
                          &indexer.k_bias, &indexer.weights, &router, &router_bias, &gate_up, &down})
    b += bytes_of(*t);
  return b + bytes_of(mlp) + bytes_of(shared);
}

}  // namespace ic::dsa
