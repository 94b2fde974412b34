#include "model/llama.h"

#include <omp.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "ops/attention.h"
#include "ops/indexer.h"
#include "ops/sparse_attention.h"
#include "ops/elementwise.h"
#include "ops/rms_norm.h"
#include "ops/swiglu.h"
#include "ops/token_logprob.h"

namespace ic {

namespace {
Tensor load_norm(const gguf::File& f, const std::string& name, int64_t dim, Device device) {
  const gguf::TensorInfo& info = f.tensor(name);
  IC_CHECK(info.numel() == dim, "{}: expected {} elements, found {} in {}", name, dim, info.numel(), f.path());
  Tensor host = Tensor::empty({dim}, DType::F32);
  dequantize_row(info.type, info.data, host.data<float>(), dim);
  return device == Device::CPU ? host : host.to(device);
}

ops::LinearWeight load_linear(const gguf::File& f, const std::string& name, int64_t n_out, int64_t n_in,
                              Device device) {
  const gguf::TensorInfo& info = f.tensor(name);
  IC_CHECK(info.ne.size() == 2 && info.ne[0] == n_in && info.ne[1] == n_out,
           "{}: expected a [{}, {}] matrix, found shape {} in {}", name, n_out, n_in, info.shape().str(),
           f.path());
  return ops::LinearWeight::load(info.type, info.data, n_out, n_in, device);
}
}  // namespace

LlamaConfig LlamaConfig::from_gguf(const gguf::File& f) {
  const std::string arch = f.get_string("general.architecture");
  IC_CHECK(arch == "llama", "{}: architecture '{}' is not supported by the llama loader", f.path(), arch);
  LlamaConfig c;
  c.n_layers = f.get_int("llama.block_count");
  c.dim = f.get_int("llama.embedding_length");
  c.n_heads = f.get_int("llama.attention.head_count");
  c.n_kv_heads = f.get_int_or("llama.attention.head_count_kv", c.n_heads);
  c.ffn_dim = f.get_int("llama.feed_forward_length");
  c.context_max = f.get_int_or("llama.context_length", 2048);
  c.rope_base = static_cast<float>(f.get_float_or("llama.rope.freq_base", 10000.0));
  c.norm_eps = static_cast<float>(f.get_float_or("llama.attention.layer_norm_rms_epsilon", 1e-5));
  IC_CHECK(c.n_layers > 0 && c.dim > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.ffn_dim > 0,
           "{}: implausible llama dimensions", f.path());
  IC_CHECK(c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0,
           "{}: {} heads do not divide width {} or are not a multiple of {} KV heads", f.path(), c.n_heads,
           c.dim, c.n_kv_heads);
  c.head_dim = c.dim / c.n_heads;
  const int64_t rope_dims = f.get_int_or("llama.rope.dimension_count", c.head_dim);
  IC_CHECK(rope_dims == c.head_dim, "{}: partial RoPE ({} of {} dims) is not supported for llama", f.path(),
           rope_dims, c.head_dim);
  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  IC_CHECK(embd.ne.size() == 2 && embd.ne[0] == c.dim, "{}: token_embd.weight has shape {}, width {} expected",
           f.path(), embd.shape().str(), c.dim);
  c.vocab = embd.ne[1];
  return c;
}

KVCache::KVCache(const LlamaConfig& cfg, int64_t capacity, Device device, const DsaSpec* dsa)
    : ModelCache(capacity) {
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    k_.push_back(Tensor::empty({cfg.n_kv_heads, capacity, cfg.head_dim}, DType::F32, device));
    v_.push_back(Tensor::empty({cfg.n_kv_heads, capacity, cfg.head_dim}, DType::F32, device));
    const bool full = dsa && dsa->pattern.is_full(l);
    index_k_.push_back(full ? Tensor::empty({capacity, dsa->config.head_dim}, indexer_key_dtype(device), device)
                            : Tensor());
  }
}

int64_t KVCache::index_bytes() const {
  int64_t b = 0;
  for (const Tensor& t : index_k_)
    if (t.defined()) b += t.nbytes();
  return b;
}

int64_t KVCache::bytes() const {
  int64_t b = 0;
  for (size_t l = 0; l < k_.size(); ++l) b += k_[l].nbytes() + v_[l].nbytes();
  return b + index_bytes();
}

LlamaModel::~LlamaModel() = default;

void LlamaModel::set_dsa(std::shared_ptr<const DsaSpec> spec) {
  index_run_.clear();
  if (spec) {
    IC_CHECK(spec->n_layers() == cfg_.n_layers, "DSA spec for {} layers on a model of {}", spec->n_layers(),
             cfg_.n_layers);
    for (int64_t l = 0; l < cfg_.n_layers; ++l)
      if (spec->pattern.is_full(l)) spec->indexers[l].check(spec->config, cfg_.dim);
    // The GPU's copies of every indexer the spec holds (a pattern override may use any of them).
    if (device_ != Device::CPU) {
      index_run_.resize(static_cast<size_t>(cfg_.n_layers));
      for (int64_t l = 0; l < cfg_.n_layers; ++l)
        if (spec->indexers[l].wq.defined())
          index_run_[l] = IndexerRunWeights::upload(spec->config, spec->indexers[l], device_);
    }
  }
  dsa_ = std::move(spec);
}

void LlamaModel::set_pattern(const LayerPattern& pattern) {
  IC_CHECK(dsa_, "a layer pattern needs indexers: attach an indexer file first (--indexers)");
  auto spec = std::make_shared<DsaSpec>(*dsa_);
  spec->pattern = pattern;
  set_dsa(std::move(spec));
}

bool LlamaModel::has_indexer(int64_t layer) const {
  IC_CHECK(layer >= 0 && layer < cfg_.n_layers, "layer {} outside the model's {} layers", layer, cfg_.n_layers);
  return dsa_ && dsa_->indexers[layer].wq.defined();
}

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& path, Device device) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->path_ = path;
  m->device_ = device;
  m->file_ = std::make_unique<gguf::File>(gguf::File::open(path));
  const gguf::File& f = *m->file_;
  m->cfg_ = LlamaConfig::from_gguf(f);
  m->tokenizer_ = std::make_unique<Tokenizer>(tokenizer_data_from_gguf(f));
  const LlamaConfig& c = m->cfg_;
  IC_CHECK(m->tokenizer_->vocab_size() == c.vocab, "{}: tokenizer has {} tokens but the embedding {} rows",
           path, m->tokenizer_->vocab_size(), c.vocab);
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayer L;
    L.attn_norm = load_norm(f, p + "attn_norm.weight", c.dim, device);
    L.ffn_norm = load_norm(f, p + "ffn_norm.weight", c.dim, device);
    L.wq = load_linear(f, p + "attn_q.weight", c.dim, c.dim, device);
    L.wk = load_linear(f, p + "attn_k.weight", kv_dim, c.dim, device);
    L.wv = load_linear(f, p + "attn_v.weight", kv_dim, c.dim, device);
    L.wo = load_linear(f, p + "attn_output.weight", c.dim, c.dim, device);
    L.w_gate = load_linear(f, p + "ffn_gate.weight", c.ffn_dim, c.dim, device);
    L.w_up = load_linear(f, p + "ffn_up.weight", c.ffn_dim, c.dim, device);
    L.w_down = load_linear(f, p + "ffn_down.weight", c.dim, c.ffn_dim, device);
    m->layers_.push_back(std::move(L));
  }
  m->output_norm_ = load_norm(f, "output_norm.weight", c.dim, device);
  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  m->embd_rows_ = embd.data;
  m->embd_type_ = embd.type;
  // Tied embeddings unless the file carries its own output head.
  const std::string head = f.find_tensor("output.weight") ? "output.weight" : "token_embd.weight";
  m->output_ = load_linear(f, head, c.vocab, c.dim, device);
  m->info_ = {"llama", f.get_string("general.architecture"), c.n_layers, c.dim, c.vocab, c.context_max};
  return m;
}

int64_t LlamaModel::weight_bytes() const {
  int64_t b = output_.bytes() + output_norm_.nbytes();
  for (const LlamaLayer& L : layers_)
    b += L.attn_norm.nbytes() + L.ffn_norm.nbytes() + L.wq.bytes() + L.wk.bytes() + L.wv.bytes() + L.wo.bytes() +
         L.w_gate.bytes() + L.w_up.bytes() + L.w_down.bytes();
  return b;
}

Tensor LlamaModel::embed(std::span<const int32_t> tokens) const {
  const int64_t n = static_cast<int64_t>(tokens.size());
  Tensor x = Tensor::empty({n, cfg_.dim}, DType::F32);
  const int64_t row_bytes = dtype_row_bytes(embd_type_, cfg_.dim);
  for (int64_t i = 0; i < n; ++i) {
    IC_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab, "token id {} at position {} is outside the vocabulary [0, {})",
             tokens[i], i, cfg_.vocab);
    dequantize_row(embd_type_, static_cast<const char*>(embd_rows_) + tokens[i] * row_bytes,
                   x.data<float>() + i * cfg_.dim, cfg_.dim);
  }
  return x;
}

Tensor LlamaModel::select(int64_t l, const Tensor& h, const Tensor& pos, KVCache& kv, int64_t p0,
                          const LayerPattern& pat) {
  const Device dev = device_;
  const int64_t n = h.dim(0);
  IC_CHECK(dsa_->indexers[l].wq.defined(), "layer {} is F in pattern {} but has no indexer weights loaded", l,
           pat.str());
  const IndexerActivations ia = dev == Device::CPU ? indexer_project(dsa_->config, dsa_->indexers[l], h, pos)
                                                   : indexer_project(dsa_->config, index_run_[l], h, pos);
  Tensor& cache = kv.index_k(l);
  IC_CHECK(cache.defined(), "layer {} is F in pattern {} but the cache has no indexer keys for it "
           "(make the cache with a spec where it is F)", l, pat.str());
  Tensor topk = Tensor::empty({n, dsa_->config.topk}, DType::I32, dev);
  if (dev == Device::CPU) {
    cache.slice_rows(p0, p0 + n).copy_from(ia.k);
    ops::indexer_topk(ia.q, cache.slice_rows(0, p0 + n), Tensor(), ia.w, p0, topk);
  } else {
    Tensor rows = cache.slice_rows(p0, p0 + n);
    ops::to_bf16(ia.k, rows);
    Tensor q16 = Tensor::empty(ia.q.shape(), DType::BF16, dev);
    ops::to_bf16(ia.q, q16);
    ops::indexer_topk(q16, cache.slice_rows(0, p0 + n), Tensor(), ia.w, p0, topk);
  }
  return topk;
}

ThreadPool* LlamaModel::decode_pool(int64_t n_tok) {
  if (device_ != Device::CPU || !use_pool_ || n_tok > kPoolTokens) return nullptr;
  const int threads = omp_get_max_threads();
  if (!pool_ || pool_->size() != threads) {
    pool_.reset();  // its workers stop before the new ones start
    pool_ = std::make_unique<ThreadPool>(threads);
  }
  return pool_.get();
}

void LlamaModel::linears(const Tensor& x, std::initializer_list<std::pair<const ops::LinearWeight*, Tensor*>> outs) {
  ThreadPool* pool = decode_pool(x.dim(0));
  if (!pool) {
    for (const auto& [w, y] : outs) ops::linear(*w, x, *y);
    return;
  }
  check_tensor(x, "linear x", DType::F32, Device::CPU, 2);
  std::array<ops::QgemmTask, 4> tasks;
  IC_ASSERT(outs.size() <= tasks.size());
  size_t k = 0;
  ops::QuantizedActs xq;
  ops::quantize_activations(x.data<float>(), x.dim(0), x.dim(1), xq);
  for (const auto& [w, y] : outs) {
    check_tensor(*y, "linear y", DType::F32, Device::CPU, 2);
    IC_CHECK(x.dim(1) == w->n_in() && y->dim(1) == w->n_out() && y->dim(0) == x.dim(0),
             "linear: x {} and y {} do not fit a {}x{} weight", x.desc(), y->desc(), w->n_out(), w->n_in());
    tasks[k++] = {&w->packed(), &xq, y->data<float>()};
  }
  ops::qgemm_batch({tasks.data(), k}, *pool);
}

void LlamaModel::forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0,
                                IndexReuse& reuse) {
  const LlamaConfig& c = cfg_;
  const Device dev = device_;
  KVCache* kvp = dynamic_cast<KVCache*>(&cache);
  IC_CHECK(kvp, "forward_layers: the cache was not made by a llama-family model");
  KVCache& kv = *kvp;
  IC_CHECK(0 <= l0 && l0 <= l1 && l1 <= c.n_layers, "forward_layers: layers [{}, {}) outside [0, {})", l0, l1,
           c.n_layers);
  check_tensor(x, "forward_layers x", DType::F32, dev, 2);
  IC_CHECK(x.dim(1) == c.dim, "forward_layers: x {} must have {} columns", x.desc(), c.dim);
  const int64_t n = x.dim(0);
  IC_CHECK(p0 >= 0 && p0 + n <= kv.capacity(), "forward_layers: positions [{}, {}) exceed the cache capacity {}",
           p0, p0 + n, kv.capacity());
  if (reuse.sparse()) {
    IC_CHECK(dsa_, "forward_layers: a layer pattern needs a DSA spec (set_dsa)");
    IC_CHECK(reuse.pattern().n_layers() == c.n_layers, "forward_layers: pattern {} has {} layers, the model {}",
             reuse.pattern().str(), reuse.pattern().n_layers(), c.n_layers);
  }
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;

  Tensor pos_host = Tensor::empty({n}, DType::I32);
  for (int64_t i = 0; i < n; ++i) pos_host.data<int32_t>()[i] = static_cast<int32_t>(p0 + i);
  const Tensor pos = dev == Device::CPU ? pos_host : pos_host.to(dev);
  Tensor h = Tensor::empty({n, c.dim}, DType::F32, dev);
  Tensor q = Tensor::empty({n, c.n_heads, c.head_dim}, DType::F32, dev);
  Tensor k = Tensor::empty({n, c.n_kv_heads, c.head_dim}, DType::F32, dev);
  Tensor v = Tensor::empty({n, c.n_kv_heads, c.head_dim}, DType::F32, dev);
  Tensor att = Tensor::empty({n, c.n_heads, c.head_dim}, DType::F32, dev);
  Tensor gate = Tensor::empty({n, c.ffn_dim}, DType::F32, dev);
  Tensor up = Tensor::empty({n, c.ffn_dim}, DType::F32, dev);
  Tensor q2 = q.reshape({n, c.dim}), k2 = k.reshape({n, kv_dim}), v2 = v.reshape({n, kv_dim});
  Tensor att2 = att.reshape({n, c.dim});
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  for (int64_t l = l0; l < l1; ++l) {
    const LlamaLayer& L = layers_[l];
    const int li = static_cast<int>(l);
    ops::rms_norm(x, L.attn_norm, c.norm_eps, h);
    dump("attn_norm", li, h);
    linears(h, {{&L.wq, &q2}, {&L.wk, &k2}, {&L.wv, &v2}});
    ops::rope(q, pos, c.head_dim, c.rope_base, c.rope_style);
    ops::rope(k, pos, c.head_dim, c.rope_base, c.rope_style);
    dump("q", li, q);
    dump("k", li, k);
    dump("v", li, v);
    ops::kv_store(k, kv.k(l), p0);
    ops::kv_store(v, kv.v(l), p0);
    // ForwardStats' indexer and attention times: on the GPU the queued projections must finish
    // first, or their time lands in the indexer's (a few microseconds of sync per layer).
    if (dev == Device::CUDA) cuda::synchronize();
    auto t_attn = std::chrono::steady_clock::now();
    if (reuse.sparse()) {
      if (reuse.runs_indexer(l)) {
        const auto t_index = std::chrono::steady_clock::now();
        reuse.publish(l, select(l, h, pos, kv, p0, reuse.pattern()));
        if (dev == Device::CUDA) cuda::synchronize();  // the indexer's kernels, not only their launches
        const auto now = std::chrono::steady_clock::now();
        stats_.indexer += std::chrono::duration<double>(now - t_index).count();
        ++stats_.indexer_layer_runs;
        t_attn = now;  // the indexer's time is not attention's
      }
      const Tensor& topk = reuse.selection(l);
      IC_CHECK(topk.dim(0) == n && topk.device() == dev,
               "forward_layers: layer {} was handed a selection {} for {} tokens on {}", l, topk.desc(), n,
               device_name(dev));
      dump("topk", li, topk);
      ops::sparse_attention(q, kv.k(l), kv.v(l), topk, p0, scale, att, nullptr, decode_pool(n));
    } else {
      ops::attention(q, kv.k(l), kv.v(l), p0, scale, att, nullptr, decode_pool(n));
    }
    if (dev == Device::CUDA) cuda::synchronize();
    stats_.attention += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_attn).count();
    dump("attn", li, att);
    linears(att2, {{&L.wo, &h}});
    ops::add_inplace(x, h);
    ops::rms_norm(x, L.ffn_norm, c.norm_eps, h);
    linears(h, {{&L.w_gate, &gate}, {&L.w_up, &up}});
    ops::swiglu(gate, up, gate);
    linears(gate, {{&L.w_down, &h}});
    dump("ffn_out", li, h);
    ops::add_inplace(x, h);
    dump("l_out", li, x);
  }
}

void LlamaModel::output_logits(const Tensor& x, float* logits) {
  const LlamaConfig& c = cfg_;
  const Device dev = device_;
  check_tensor(x, "output_logits x", DType::F32, dev, 2);
  const int64_t rows = x.dim(0);
  Tensor normed = Tensor::empty(x.shape(), DType::F32, dev);
  ops::rms_norm(x, output_norm_, c.norm_eps, normed);
  dump("result_norm", -1, normed);
  if (dev == Device::CPU) {
    Tensor out = Tensor::borrow(logits, {rows, c.vocab}, DType::F32);
    linears(normed, {{&output_, &out}});
  } else {
    Tensor out = Tensor::empty({rows, c.vocab}, DType::F32, dev);
    ops::linear(output_, normed, out);
    Tensor host = Tensor::borrow(logits, {rows, c.vocab}, DType::F32);
    host.copy_from(out);
  }
}

void LlamaModel::output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out) {
  const LlamaConfig& c = cfg_;
  const Device dev = device_;
  check_tensor(x, "output_logprobs x", DType::F32, dev, 2);
  const int64_t rows = x.dim(0);
  IC_CHECK(static_cast<int64_t>(targets.size()) == rows, "output_logprobs: {} targets for {} rows", targets.size(),
           rows);
  if (rows == 0) return;
  Tensor normed = Tensor::empty(x.shape(), DType::F32, dev);
  ops::rms_norm(x, output_norm_, c.norm_eps, normed);
  dump("result_norm", -1, normed);
  Tensor logits = Tensor::empty({rows, c.vocab}, DType::F32, dev);
  ops::linear(output_, normed, logits);
  const Tensor target = Tensor::borrow(const_cast<int32_t*>(targets.data()), {rows}, DType::I32);
  if (dev == Device::CPU) {
    Tensor o = Tensor::borrow(out, {rows}, DType::F32);
    ops::token_logprob(logits, target, o);
  } else {
    Tensor o = Tensor::empty({rows}, DType::F32, dev);
    ops::token_logprob(logits, target, o);
    Tensor host = Tensor::borrow(out, {rows}, DType::F32);
    host.copy_from(o);
  }
}

}  // namespace ic
