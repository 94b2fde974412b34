#include "model/dsa_family/gpu_forward.h"

#include <chrono>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "model/dsa_family/random_weights.h"
#include "ops/elementwise.h"
#include "ops/gemm_bf16.h"
#include "ops/indexer.h"
#include "ops/layer_norm.h"
#include "ops/moe_experts.h"
#include "ops/rms_norm.h"
#include "ops/sparse_mla.h"
#include "ops/swiglu.h"
#include "ops/token_logprob.h"

namespace ic::dsa {

namespace {

constexpr float kLoraNormEps = 1e-6f;  // q_a_layernorm, kv_a_layernorm (HF's default eps)
constexpr float kKeyNormEps = 1e-6f;   // the indexer's key LayerNorm

// New activations live where their inputs do (the GPU, or the host when the path is tested there).
Tensor f32_like(const Tensor& x, const Shape& s) { return Tensor::empty(s, DType::F32, x.device()); }
Tensor bf16_like(const Tensor& x, const Shape& s) { return Tensor::empty(s, DType::BF16, x.device()); }

// y F32 [n, out] = x BF16 [n, in] @ w BF16 [out, in]^T.
Tensor gemm(const Tensor& x, const Tensor& w) {
  Tensor y = f32_like(x, {x.dim(0), w.dim(0)});
  ops::gemm_bf16(x, w, y);
  return y;
}

Tensor to_bf16(const Tensor& x) {
  Tensor y = bf16_like(x, x.shape());
  ops::to_bf16(x, y);
  return y;
}

Tensor rms_norm(const Tensor& x, const Tensor& w, float eps) {
  Tensor y = f32_like(x, x.shape());
  ops::rms_norm(x, w, eps, y);
  return y;
}

void add_bias(Tensor& y, const Tensor& b) {
  if (b.defined()) gpu::add_bias(y.device(), y.data<float>(), b.data<float>(), y.dim(0), y.dim(1));
}

// x += down(silu(gate h) * up h).
void mlp(const GpuMlp& m, const Tensor& h_bf, Tensor& x) {
  Tensor gate = gemm(h_bf, m.gate);
  const Tensor up = gemm(h_bf, m.up);
  ops::swiglu(gate, up, gate);
  ops::gemm_bf16(to_bf16(gate), m.down, x, /*accumulate=*/true);
}

void tap_if(const GpuTap& tap, const char* name, int layer, const Tensor& t) {
  if (tap) tap(name, layer, t);
}

}  // namespace

GpuCache::GpuCache(const MlaMoeConfig& c, int64_t capacity, const LayerPattern* pattern, Device dev, bool fp8_keys)
    : ModelCache(capacity),
      kv_(static_cast<size_t>(c.n_layers)),
      index_k_(static_cast<size_t>(c.n_layers)),
      index_scale_(static_cast<size_t>(c.n_layers)),
      fp8_keys_(fp8_keys) {
  for (int64_t l = 0; l < c.n_layers; ++l) {
    kv_[l] = Tensor::zeros({capacity, c.kv_lora_rank + c.qk_rope_dim}, DType::BF16, dev);
    if (!pattern || !pattern->is_full(l)) continue;
    index_k_[l] = Tensor::zeros({capacity, c.index_head_dim}, fp8_keys ? DType::F8_E4M3 : DType::BF16, dev);
    if (fp8_keys) index_scale_[l] = Tensor::zeros({capacity}, DType::F32, dev);
  }
}

int64_t GpuCache::bytes() const {
  int64_t b = index_bytes();
  for (const Tensor& t : kv_) b += t.nbytes();
  return b;
}

int64_t GpuCache::index_bytes() const {
  int64_t b = 0;
  for (const std::vector<Tensor>* v : {&index_k_, &index_scale_})
    for (const Tensor& t : *v)
      if (t.defined()) b += t.nbytes();
  return b;
}

GpuForward::GpuForward(const MlaMoeConfig& c, const RopeTable& rope, Device dev)
    : c_(c), dev_(dev), attention_factor_(rope.attention_factor()) {
  Tensor inv = Tensor::empty({static_cast<int64_t>(rope.inv_freq().size())}, DType::F32);
  std::copy(rope.inv_freq().begin(), rope.inv_freq().end(), inv.data<float>());
  inv_freq_ = inv.to(dev);
  router_.top_k = c.n_experts_per_tok;
  router_.n_group = c.n_group;
  router_.topk_group = c.topk_group;
  router_.norm_topk_prob = c.norm_topk_prob;
  router_.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
}

GpuForward::GpuForward(const MlaMoeConfig& c, const RopeTable& rope, const std::vector<LayerWeights>& layers,
                       const Tensor& final_norm, const Tensor& lm_head, Device dev)
    : GpuForward(c, rope, dev) {
  layers_.reserve(layers.size());
  for (const LayerWeights& w : layers) layers_.push_back(upload_layer(c, w, dev));
  final_norm_ = upload_f32(final_norm, dev);
  lm_head_ = upload_bf16(lm_head, dev);
}

GpuForward::GpuForward(const MlaMoeConfig& c, const RopeTable& rope, uint64_t seed, Device dev)
    : GpuForward(c, rope, dev) {
  layers_.reserve(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) layers_.push_back(random_gpu_layer(c, seed, l, dev));
  final_norm_ = Tensor::empty({c.hidden}, DType::F32, dev);
  fill_value(final_norm_, 1.0f);
  lm_head_ = Tensor::empty({c.vocab, c.hidden}, DType::BF16, dev);
  if (c.tie_word_embeddings)
    fill_random(lm_head_, random_key(seed, "model.embed_tokens.weight"), 1.0f);
  else
    fill_random(lm_head_, random_key(seed, "lm_head.weight"), random_bound(c.hidden));
}

void GpuForward::sync_indexers(const std::vector<LayerWeights>& layers, const LayerPattern& pattern) {
  for (int64_t l : pattern.full_layers()) {
    GpuLayer& g = layers_[static_cast<size_t>(l)];
    const IndexerWeights& w = layers[static_cast<size_t>(l)].indexer;
    if (!g.indexer.loaded() && w.loaded()) g.indexer = upload_indexer(c_, w, dev_);
  }
}

int64_t GpuForward::weight_bytes() const {
  int64_t b = final_norm_.nbytes() + lm_head_.nbytes();
  for (const GpuLayer& g : layers_) b += g.bytes();
  return b;
}

std::unique_ptr<ModelCache> GpuForward::make_cache(int64_t capacity, const LayerPattern* pattern) const {
  return std::make_unique<GpuCache>(c_, capacity, pattern, dev_, index_fp8_);
}

gpu::RopeArgs GpuForward::rope_args(MlaRope style) const {
  return {inv_freq_.data<float>(), c_.qk_rope_dim, attention_factor_, style == MlaRope::Interleave};
}

Tensor GpuForward::query(const GpuLayer& g, const Tensor& h_bf, int64_t p0, Tensor& ql_bf) const {
  const int64_t n = h_bf.dim(0), H = c_.n_heads, qk = c_.qk_head_dim();
  Tensor q;
  if (c_.q_lora_rank > 0) {
    Tensor qa = gemm(h_bf, g.q_a);
    add_bias(qa, g.q_a_bias);
    ops::rms_norm(qa, g.q_a_norm, kLoraNormEps, qa);
    ql_bf = to_bf16(qa);
    q = gemm(ql_bf, g.q_b);
  } else {
    q = gemm(h_bf, g.q_proj);
  }
  gpu::rope_rows(dev_, q.data<float>(), n, H, H * qk, qk, c_.qk_nope_dim, rope_args(c_.mla_rope), p0);
  return q.reshape({n, H, qk});
}

void GpuForward::write_kv(const GpuLayer& g, const Tensor& h_bf, Tensor& kv, int64_t p0) const {
  Tensor kva = gemm(h_bf, g.kv_a);
  add_bias(kva, g.kv_a_bias);
  gpu::kv_rows(dev_, kva.data<float>(), h_bf.dim(0), c_.kv_lora_rank, g.kv_a_norm.data<float>(), kLoraNormEps,
               rope_args(c_.mla_rope), p0, kv.data<uint16_t>());
}

Tensor GpuForward::select(int64_t l, const Tensor& h_bf, const Tensor& ql_bf, GpuCache& cache, int64_t p0,
                          const GpuTap& tap) const {
  const GpuIndexer& w = layers_[static_cast<size_t>(l)].indexer;
  Tensor& keys = cache.index_k(l);
  IC_CHECK(w.loaded(), "forward_layers: layer {} is F but its indexer is not on the GPU", l);
  IC_CHECK(keys.defined(), "forward_layers: layer {} is F but the cache has no indexer keys for it (make the cache "
           "after set_pattern)", l);
  IC_CHECK(ql_bf.defined(), "forward_layers: the indexer of layer {} needs the q latent (q_lora_rank > 0)", l);
  const int64_t n = h_bf.dim(0), Hi = c_.index_n_heads, Di = c_.index_head_dim;
  const int li = static_cast<int>(l);
  Tensor q = gemm(ql_bf, w.wq_b);  // [n, Hi * Di]
  gpu::rope_rows(dev_, q.data<float>(), n, Hi, Hi * Di, Di, 0, rope_args(c_.index_rope), p0);
  Tensor k = gemm(h_bf, w.wk);  // [n, Di]
  ops::layer_norm(k, w.k_norm, w.k_bias, kKeyNormEps, k);
  gpu::rope_rows(dev_, k.data<float>(), n, 1, Di, Di, 0, rope_args(c_.index_rope), p0);
  Tensor wt = gemm(h_bf, w.weights);  // [n, Hi], Hi^-1/2 Di^-1/2 folded in
  tap_if(tap, "index_q", li, q.reshape({n, Hi, Di}));
  tap_if(tap, "index_k", li, k);
  tap_if(tap, "index_w", li, wt);
  Tensor topk = Tensor::empty({n, c_.index_topk}, DType::I32, dev_);
  if (cache.fp8_keys()) {
    IC_CHECK(index_fp8_, "forward_layers: the cache holds fp8 indexer keys but the path runs the bf16 indexer "
             "(make the cache after set_indexer_fp8)");
    // Keys quantised into their cache rows; q per head row, its scale folded into the head weight.
    Tensor& scales = cache.index_scale(l);
    gpu::quantize_rows_fp8(dev_, k.data<float>(), n, Di, keys.data<uint8_t>() + p0 * Di, scales.data<float>() + p0,
                           nullptr);
    Tensor q8 = Tensor::empty({n, Hi, Di}, DType::F8_E4M3, dev_);
    gpu::quantize_rows_fp8(dev_, q.data<float>(), n * Hi, Di, q8.data<uint8_t>(), nullptr, wt.data<float>());
    ops::indexer_topk(q8, keys.slice_rows(0, p0 + n), scales.slice_rows(0, p0 + n), wt, p0, topk);
    return topk;
  }
  IC_CHECK(!index_fp8_, "forward_layers: the fp8 indexer needs a cache made after set_indexer_fp8 (this one holds "
           "bf16 keys)");
  Tensor new_keys = keys.slice_rows(p0, p0 + n);
  ops::to_bf16(k, new_keys);
  ops::indexer_topk(to_bf16(q).reshape({n, Hi, Di}), keys.slice_rows(0, p0 + n), Tensor(), wt, p0, topk);
  return topk;
}

void GpuForward::attend(const GpuLayer& g, const Tensor& q, const Tensor& kv, const Tensor& sel, Tensor& x) const {
  const int64_t n = q.dim(0), H = c_.n_heads, nope = c_.qk_nope_dim, R = c_.qk_rope_dim, v = c_.v_head_dim;
  const int64_t L = c_.kv_lora_rank;
  // The absorbed query: per head q_nope [n, nope] @ W_uk^T [L, nope]^T -> [n, L].
  Tensor q_nope = bf16_like(q, {H * n, nope});
  Tensor q576 = bf16_like(q, {n, H, L + R});
  gpu::split_query(dev_, q.data<float>(), n, H, nope, R, L, q_nope.data<uint16_t>(), q576.data<uint16_t>());
  Tensor q_abs = f32_like(q, {H * n, L});
  // One strided batch over the heads: q_abs[h] = q_nope[h] @ w_uk_t[h]^T.
  ops::GemmBf16Params absorb{q_nope.data<uint16_t>(), g.w_uk_t.data<uint16_t>(), q_abs.raw(), n, L, nope, DType::F32};
  absorb.batch = H;
  absorb.stride_x = n * nope;
  absorb.stride_w = L * nope;
  absorb.stride_y = n * L;
  ops::gemm_bf16(absorb, dev_);
  gpu::heads_to_tokens(dev_, q_abs.data<float>(), n, H, L, q576.data<uint16_t>(), L + R, 0);

  Tensor lat = f32_like(q, {n, H, L});
  ops::sparse_mla(q576, kv, sel, static_cast<float>(c_.softmax_scale()), lat);

  // Values: per head the weighted latent [n, L] @ W_uv [v, L]^T (kv_b's v rows of the head).
  Tensor lat_hm = bf16_like(q, {H * n, L});
  gpu::tokens_to_heads(dev_, lat.data<float>(), n, H, L, lat_hm.data<uint16_t>());
  Tensor att_hm = f32_like(q, {H * n, v});
  // att[h] = lat[h] @ W_uv[h]^T, W_uv[h] = kv_b rows h (nope + v) + nope .. + v: one strided batch.
  ops::GemmBf16Params values{lat_hm.data<uint16_t>(), g.kv_b.data<uint16_t>() + nope * L, att_hm.raw(), n, v, L,
                             DType::F32};
  values.batch = H;
  values.stride_x = n * L;
  values.stride_w = (nope + v) * L;
  values.stride_y = n * v;
  ops::gemm_bf16(values, dev_);
  Tensor att = bf16_like(q, {n, H * v});
  gpu::heads_to_tokens(dev_, att_hm.data<float>(), n, H, v, att.data<uint16_t>(), v, 0);
  ops::gemm_bf16(att, g.o, x, /*accumulate=*/true);
  add_bias(x, g.o_bias);
}

void GpuForward::ffn(int layer, const GpuLayer& g, Tensor& x, const GpuTap& tap) const {
  const int64_t n = x.dim(0), K = router_.top_k;
  const Tensor h = rms_norm(x, g.post_norm, static_cast<float>(c_.rms_norm_eps));
  tap_if(tap, "ffn_norm", layer, h);
  const Tensor h_bf = to_bf16(h);
  if (!g.moe) return mlp(g.mlp, h_bf, x);
  Tensor ids = Tensor::empty({n, K}, DType::I32, dev_);
  Tensor weights = f32_like(x, {n, K});
  ops::moe_route(h, g.router, g.router_bias, router_, ids, weights);
  tap_if(tap, "moe_route", layer, ids);
  tap_if(tap, "moe_weights", layer, weights);
  Tensor routed = f32_like(x, {n, c_.hidden});
  // A few pairs (decode): the matrix-vector mode, no host sync; moe_route's ids are in range.
  const ops::MoeGemm mode = n * K <= ops::kMoeGemvPairs ? ops::MoeGemm::Gemv : ops::MoeGemm::Auto;
  ops::moe_experts(h_bf, ids, weights, g.gate_up, g.down, routed, nullptr, mode);
  ops::add_inplace(x, routed);
  if (g.shared.defined()) mlp(g.shared, h_bf, x);
}

void GpuForward::forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0, IndexReuse& reuse,
                                const GpuTap& tap, ForwardStats& stats) {
  auto* gc = dynamic_cast<GpuCache*>(&cache);
  IC_CHECK(gc, "forward_layers: the cache was not made by a DSA-family model on the GPU");
  IC_CHECK(0 <= l0 && l0 <= l1 && l1 <= c_.n_layers, "forward_layers: layers [{}, {}) outside [0, {})", l0, l1,
           c_.n_layers);
  check_tensor(x, "forward_layers x", DType::F32, dev_, 2);
  IC_CHECK(x.dim(1) == c_.hidden, "forward_layers: x {} must have {} columns", x.desc(), c_.hidden);
  const int64_t n = x.dim(0);
  IC_CHECK(p0 >= 0 && p0 + n <= gc->capacity(), "forward_layers: positions [{}, {}) exceed the cache capacity {}", p0,
           p0 + n, gc->capacity());
  if (reuse.sparse()) {
    IC_CHECK(c_.has_indexer_arch(), "forward_layers: {} is a dense MLA model; a layer pattern needs indexers",
             c_.architecture);
    IC_CHECK(reuse.pattern().n_layers() == c_.n_layers, "forward_layers: pattern {} has {} layers, the model {}",
             reuse.pattern().str(), reuse.pattern().n_layers(), c_.n_layers);
  }
  if (n == 0) return;
  // Dense attention is sparse MLA over every causal key: one index list for all layers.
  Tensor causal;
  if (!reuse.sparse()) {
    causal = Tensor::empty({n, p0 + n}, DType::I32, dev_);
    gpu::causal_indices(dev_, causal.data<int32_t>(), n, p0 + n, p0);
  }
  for (int64_t l = l0; l < l1; ++l) {
    const GpuLayer& g = layers_[static_cast<size_t>(l)];
    const int li = static_cast<int>(l);
    const Tensor h = rms_norm(x, g.input_norm, static_cast<float>(c_.rms_norm_eps));
    tap_if(tap, "attn_norm", li, h);
    const Tensor h_bf = to_bf16(h);
    Tensor ql_bf;
    const Tensor q = query(g, h_bf, p0, ql_bf);
    tap_if(tap, "q", li, q);
    Tensor& kv = gc->kv(l);
    write_kv(g, h_bf, kv, p0);
    const Tensor* sel = &causal;
    if (reuse.sparse()) {
      if (reuse.runs_indexer(l)) {
        const double t0 = phase_clock();
        reuse.publish(l, select(l, h_bf, ql_bf, *gc, p0, tap));
        ++stats.indexer_layer_runs;
        if (phase_timing_) stats.indexer += phase_clock() - t0;
      }
      sel = &reuse.selection(l);
      IC_CHECK(sel->rank() == 2 && sel->dim(0) == n && sel->dtype() == DType::I32 && sel->device() == dev_,
               "forward_layers: layer {} was handed a selection {} for {} tokens; the GPU path needs I32 [{}, k] on "
               "{}", l, sel->desc(), n, n, device_name(dev_));
      tap_if(tap, "topk", li, *sel);
    }
    const double t_attn = phase_clock();
    attend(g, q, kv.slice_rows(0, p0 + n), *sel, x);
    if (phase_timing_) stats.attention += phase_clock() - t_attn;
    ffn(li, g, x, tap);
    tap_if(tap, "l_out", li, x);
  }
}

double GpuForward::phase_clock() const {
  if (!phase_timing_) return 0.0;
  if (dev_ == Device::CUDA) ic::cuda::synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Tensor GpuForward::logits(const Tensor& x, const GpuTap& tap) const {
  check_tensor(x, "output x", DType::F32, dev_, 2);
  IC_CHECK(x.dim(1) == c_.hidden, "output: x {} must have {} columns", x.desc(), c_.hidden);
  const Tensor h = rms_norm(x, final_norm_, static_cast<float>(c_.rms_norm_eps));
  tap_if(tap, "result_norm", -1, h);
  Tensor z = f32_like(x, {x.dim(0), c_.vocab});
  ops::gemm_bf16(to_bf16(h), lm_head_, z);
  return z;
}

void GpuForward::output_logits(const Tensor& x, float* out, const GpuTap& tap) const {
  if (x.dim(0) == 0) return;
  const Tensor z = logits(x, tap);
  Tensor host = Tensor::borrow(out, z.shape(), DType::F32);
  host.copy_from(z);
}

void GpuForward::output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out,
                                 const GpuTap& tap) const {
  const int64_t rows = x.dim(0);
  IC_CHECK(static_cast<int64_t>(targets.size()) == rows, "output_logprobs: {} targets for {} rows", targets.size(),
           rows);
  if (rows == 0) return;
  const Tensor z = logits(x, tap);
  const Tensor target = Tensor::borrow(const_cast<int32_t*>(targets.data()), {rows}, DType::I32);
  Tensor lp = f32_like(z, {rows});
  ops::token_logprob(z, target, lp);
  Tensor host = Tensor::borrow(out, {rows}, DType::F32);
  host.copy_from(lp);
}

}  // namespace ic::dsa
