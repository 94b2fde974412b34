#include "indexcache/family_trainer.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <random>

#include "core/error.h"
#include "indexcache/mla_teacher.h"
#include "model/index_reuse.h"

namespace ic {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  c.copy_from(t);
  return c;
}

// One layer's taps of a window.
struct LayerTap {
  Tensor h;   // attn_norm [n, hidden]
  Tensor ql;  // q_latent [n, q_lora] (undefined without q LoRA)
  MlaTeacherInput t;
};

// The end of the group F layer f serves: the next F layer, or n_layers.
int64_t group_end_of(const LayerPattern& p, int64_t f) {
  int64_t e = f + 1;
  while (e < p.n_layers() && !p.is_full(e)) ++e;
  return e;
}

// Runs `tokens` from position 0 through the model dense, a layer at a time, and calls
// fn(f, taps of layers f .. end-1) when each group of `pattern` is complete.
void for_each_group(MlaMoeModel& model, std::span<const int32_t> tokens, const LayerPattern& pattern,
                    const std::function<void(int64_t, std::vector<LayerTap>&)>& fn) {
  const MlaMoeConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  Tensor x = model.embed(tokens);
  auto cache = model.make_cache(n);
  IndexReuse dense;
  LayerTap cur;
  int64_t cur_layer = -1;
  model.set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) {
    if (layer != cur_layer) return;
    if (name == "attn_norm") cur.h = copy_of(t);
    else if (name == "q_latent") cur.ql = copy_of(t);
    else if (name == "q") cur.t.qa = mla_absorbed_query(c, model.layer(layer).attn, t);
    else if (name == "kv_latent") cur.t.kv = copy_of(t);
  });
  struct Clear {
    MlaMoeModel* m;
    ~Clear() { m->set_tensor_callback(nullptr); }
  } clear{&model};
  std::vector<LayerTap> group;
  int64_t f = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    cur = LayerTap{};
    cur_layer = l;
    model.forward_layers(l, l + 1, x, *cache, 0, dense);
    IC_CHECK(cur.h.defined() && cur.t.qa.defined() && cur.t.kv.defined(),
             "distill: layer {} of {} gave no attn_norm / q / kv_latent taps", l, c.architecture);
    if (pattern.is_full(l)) f = l;
    group.push_back(std::move(cur));
    if (l + 1 == group_end_of(pattern, f)) {
      fn(f, group);
      group.clear();
    }
  }
}

IndexerWeights random_own(const MlaMoeConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto mat = [&](int64_t rows, int64_t cols) {
    std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt(static_cast<double>(cols)));
    Tensor t = Tensor::empty({rows, cols}, DType::F32);
    for (int64_t i = 0; i < rows * cols; ++i) t.data<float>()[i] = static_cast<float>(nd(rng));
    return t;
  };
  const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
  IndexerWeights w;
  w.wq = mat(Hi * Di, c.q_lora_rank);
  w.wk = mat(Di, c.hidden);
  w.k_norm = Tensor::empty({Di}, DType::F32);
  for (int64_t i = 0; i < Di; ++i) w.k_norm.data<float>()[i] = 1.0f;
  w.k_bias = Tensor::zeros({Di}, DType::F32);
  w.wproj = mat(Hi, c.hidden);
  return w;
}

// The loss input of F layer f's indexer on a group's taps.
FamilyLossInput loss_input(bool own, const LayerTap& ft, const IndexerRope& rope, int64_t chunk) {
  FamilyLossInput in;
  in.xq = own ? ft.ql : ft.h;
  in.x = ft.h;
  in.rope = &rope;
  in.chunk = chunk;
  return in;
}

}  // namespace

FamilyAdamW::FamilyAdamW(const AdamWConfig& cfg, const IndexerWeights& like)
    : cfg_(cfg), m_(zeros_like(like)), v_(zeros_like(like)) {
  cfg_.validate();
}

AdamWStepInfo FamilyAdamW::step(IndexerWeights& w, const IndexerWeights& grad) {
  Tensor* ws[] = {&w.wq, &w.wk, &w.k_norm, &w.k_bias, &w.wproj};
  const Tensor* gs[] = {&grad.wq, &grad.wk, &grad.k_norm, &grad.k_bias, &grad.wproj};
  Tensor* ms[] = {&m_.wq, &m_.wk, &m_.k_norm, &m_.k_bias, &m_.wproj};
  Tensor* vs[] = {&v_.wq, &v_.wk, &v_.k_norm, &v_.k_bias, &v_.wproj};
  const bool decay[] = {true, true, false, false, true};
  for (int j = 0; j < 5; ++j)
    IC_CHECK(ws[j]->defined() && gs[j]->defined() && ws[j]->shape() == gs[j]->shape() &&
                 ws[j]->shape() == ms[j]->shape(),
             "distill: AdamW step on weights and gradients of different shapes");
  AdamWStepInfo info;
  ++step_;
  info.lr = adamw_lr(cfg_, step_);
  double sq = 0.0;
  for (const Tensor* g : gs)
    for (int64_t i = 0; i < g->numel(); ++i) sq += static_cast<double>(g->data<float>()[i]) * g->data<float>()[i];
  info.grad_norm = std::sqrt(sq);
  if (cfg_.clip_norm > 0.0 && info.grad_norm > cfg_.clip_norm) info.clip_scale = cfg_.clip_norm / info.grad_norm;
  const double b1t = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step_));
  const double b2t = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step_));
  for (int j = 0; j < 5; ++j) {
    float* th = ws[j]->data<float>();
    float* m = ms[j]->data<float>();
    float* v = vs[j]->data<float>();
    const float* g = gs[j]->data<float>();
    const double dec = decay[j] ? info.lr * cfg_.weight_decay : 0.0;
    for (int64_t i = 0; i < ws[j]->numel(); ++i) {
      // adamw.cpp's arithmetic, operation for operation (the test checks the bits)
      const double gi = static_cast<double>(g[i]) * info.clip_scale;
      const double mi = cfg_.beta1 * m[i] + (1.0 - cfg_.beta1) * gi;
      const double vi = cfg_.beta2 * v[i] + (1.0 - cfg_.beta2) * gi * gi;
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      double t = static_cast<double>(th[i]) * (1.0 - dec);
      t -= info.lr * (mi / b1t) / (std::sqrt(vi / b2t) + cfg_.eps);
      th[i] = static_cast<float>(t);
    }
  }
  return info;
}

FamilyTrainer::FamilyTrainer(MlaMoeModel& model, const TextWindows& data, FamilyTrainerConfig cfg)
    : model_(&model), data_(&data), cfg_(std::move(cfg)), stream_(data, cfg_.seed) {
  const MlaMoeConfig& c = model.config();
  IC_CHECK(model.device() == Device::CPU, "distill on the DSA family runs on the CPU reference path (--device cpu)");
  IC_CHECK(!model.dsa(), "distill: the model has attached indexers; the teacher must run dense");
  own_ = c.has_indexer_arch();
  pattern_ = cfg_.mode == DistillMode::kWarmup ? LayerPattern::all_full(c.n_layers) : cfg_.pattern;
  IC_CHECK(pattern_.n_layers() == c.n_layers, "distill: pattern {} has {} layers, {} has {}", pattern_.str(),
           pattern_.n_layers(), c.architecture, c.n_layers);
  if (own_) {
    IC_CHECK(c.q_lora_rank > 0, "distill: {} without q LoRA has no query latent for its indexer", c.architecture);
    shape_ = FamilyIndexerShape{c.index_n_heads, c.index_head_dim, c.index_topk, 1e-6};
  } else {
    cfg_.attach.validate(c.hidden);
    shape_ = FamilyIndexerShape{cfg_.attach.n_heads, cfg_.attach.head_dim, cfg_.attach.topk, cfg_.attach.norm_eps};
  }
  weights_.resize(static_cast<size_t>(c.n_layers));
  opt_.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l : pattern_.full_layers()) {
    const uint64_t seed = cfg_.seed * 1000003ull + static_cast<uint64_t>(l);
    IndexerWeights& w = weights_[static_cast<size_t>(l)];
    if (!own_) {
      w = IndexerWeights::random(cfg_.attach, c.hidden, seed);
    } else if (model.layer(l).indexer.loaded()) {
      const dsa::IndexerWeights& iw = model.layer(l).indexer;
      w.wq = copy_of(iw.wq_b);
      w.wk = copy_of(iw.wk);
      w.k_norm = copy_of(iw.k_norm);
      w.k_bias = copy_of(iw.k_bias);
      w.wproj = copy_of(iw.weights_proj);
    } else {
      w = random_own(c, seed);
    }
    opt_[static_cast<size_t>(l)] = std::make_unique<FamilyAdamW>(cfg_.adamw, w);
  }
}

StepReport FamilyTrainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const MlaMoeConfig& c = model_->config();
  const double scale = c.softmax_scale();
  const std::vector<int64_t> full = pattern_.full_layers();
  std::vector<IndexerWeights> grad(weights_.size());
  std::vector<DistillStats> stats(weights_.size());
  for (int64_t l : full) grad[l] = zeros_like(weights_[l]);
  StepReport r;
  for (int64_t b = 0; b < cfg_.batch; ++b) {
    const std::span<const int32_t> window = stream_.next();
    const int64_t n = static_cast<int64_t>(window.size());
    r.tokens += n;
    const IndexerRope rope = own_ ? IndexerRope::from_table(model_->rope(), c.index_rope, n)
                                  : IndexerRope::from_base(cfg_.attach.rope_base, cfg_.attach.rope_dim,
                                                           cfg_.attach.rope_style, n);
    for_each_group(*model_, window, pattern_, [&](int64_t f, std::vector<LayerTap>& group) {
      std::vector<MlaTeacherInput> targets;
      for (const LayerTap& t : group) targets.push_back(t.t);
      FamilyLossInput in = loss_input(own_, group[0], rope, cfg_.chunk);
      in.targets = [&](int64_t a, int64_t e, float* out) { mean_target_rows(targets, scale, a, e, out); };
      const auto tl = std::chrono::steady_clock::now();
      stats[f].add(family_indexer_loss(shape_, weights_[f], in, &grad[f]));
      r.loss_s += seconds_since(tl);
    });
  }
  for (int64_t l : full) {
    if (stats[l].rows > 0) {
      const float s = 1.0f / static_cast<float>(stats[l].rows);
      for (Tensor* t : {&grad[l].wq, &grad[l].wk, &grad[l].k_norm, &grad[l].k_bias, &grad[l].wproj})
        for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] *= s;
    }
    const AdamWStepInfo info = opt_[l]->step(weights_[l], grad[l]);
    r.lr = info.lr;
    r.max_grad_norm = std::max(r.max_grad_norm, info.grad_norm);
    r.stats.add(stats[l]);
    r.mean_kl += stats[l].mean_kl() / static_cast<double>(full.size());
    r.recall += stats[l].recall() / static_cast<double>(full.size());
  }
  r.step = ++step_;
  r.total = cfg_.adamw.total_steps;
  r.seconds = seconds_since(t0);
  r.forward_s = r.seconds - r.loss_s;  // the frozen forward and the teacher, interleaved per group
  return r;
}

dsa::IndexerWeights FamilyTrainer::checkpoint_weights(int64_t l) const {
  IC_CHECK(own_, "distill: {} has no indexers of its own", model_->config().architecture);
  const IndexerWeights& w = weights_.at(static_cast<size_t>(l));
  IC_CHECK(w.wq.defined(), "distill: layer {} is not an F layer of pattern {}", l, pattern_.str());
  dsa::IndexerWeights d;
  d.wq_b = w.wq;
  d.wk = w.wk;
  d.k_norm = w.k_norm;
  d.k_bias = w.k_bias;
  d.weights_proj = w.wproj;
  return d;
}

DsaSpec FamilyTrainer::spec() const {
  IC_CHECK(!own_, "distill: {} keeps its indexers in the checkpoint (write them back instead)",
           model_->config().architecture);
  DsaSpec s;
  s.config = cfg_.attach;
  s.pattern = pattern_;
  s.indexers.resize(weights_.size());
  for (int64_t l : pattern_.full_layers()) {
    const IndexerWeights& w = weights_[static_cast<size_t>(l)];
    s.indexers[static_cast<size_t>(l)] = IndexerWeights{copy_of(w.wq), copy_of(w.wk), copy_of(w.k_norm),
                                                        copy_of(w.k_bias), copy_of(w.wproj)};
  }
  return s;
}

FamilyIndexers FamilyTrainer::indexers() const {
  FamilyIndexers ix;
  ix.own = own_;
  ix.shape = shape_;
  ix.pattern = pattern_;
  ix.attach = cfg_.attach;
  ix.w.resize(weights_.size());
  for (int64_t l : pattern_.full_layers()) {
    const IndexerWeights& w = weights_[static_cast<size_t>(l)];
    ix.w[static_cast<size_t>(l)] = IndexerWeights{copy_of(w.wq), copy_of(w.wk), copy_of(w.k_norm), copy_of(w.k_bias),
                                                  copy_of(w.wproj)};
  }
  return ix;
}

FamilyIndexers checkpoint_indexers(const MlaMoeModel& model, const LayerPattern& pattern) {
  const MlaMoeConfig& c = model.config();
  IC_CHECK(c.has_indexer_arch(), "{} has no indexers of its own", c.architecture);
  IC_CHECK(pattern.n_layers() == c.n_layers, "pattern {} has {} layers, the model {}", pattern.str(),
           pattern.n_layers(), c.n_layers);
  FamilyIndexers ix;
  ix.own = true;
  ix.shape = FamilyIndexerShape{c.index_n_heads, c.index_head_dim, c.index_topk, 1e-6};
  ix.pattern = pattern;
  ix.w.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l : pattern.full_layers()) {
    const dsa::IndexerWeights& w = model.layer(l).indexer;
    IC_CHECK(w.loaded(), "{}: layer {} is F in pattern {} but its indexer is not loaded", model.path(), l,
             pattern.str());
    ix.w[static_cast<size_t>(l)] =
        IndexerWeights{copy_of(w.wq_b), copy_of(w.wk), copy_of(w.k_norm), copy_of(w.k_bias), copy_of(w.weights_proj)};
  }
  return ix;
}

FamilyIndexers attached_indexers(const DsaSpec& spec) {
  FamilyIndexers ix;
  ix.own = false;
  ix.shape = FamilyIndexerShape{spec.config.n_heads, spec.config.head_dim, spec.config.topk, spec.config.norm_eps};
  ix.pattern = spec.pattern;
  ix.attach = spec.config;
  ix.w = spec.indexers;
  return ix;
}

EvalReport evaluate_family(MlaMoeModel& model, const FamilyIndexers& ix, const TextWindows& heldout, int64_t chunk) {
  const auto t0 = std::chrono::steady_clock::now();
  const MlaMoeConfig& c = model.config();
  const double scale = c.softmax_scale();
  EvalReport rep;
  rep.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < heldout.n_windows(); ++i) {
    const std::span<const int32_t> window = heldout.window(i);
    const int64_t n = static_cast<int64_t>(window.size());
    rep.tokens += n;
    ++rep.windows;
    const IndexerRope rope =
        ix.own ? IndexerRope::from_table(model.rope(), c.index_rope, n)
               : IndexerRope::from_base(ix.attach.rope_base, ix.attach.rope_dim, ix.attach.rope_style, n);
    for_each_group(model, window, ix.pattern, [&](int64_t f, std::vector<LayerTap>& group) {
      for (size_t j = 0; j < group.size(); ++j) {
        FamilyLossInput in = loss_input(ix.own, group[0], rope, chunk);
        const MlaTeacherInput& t = group[j].t;
        in.targets = [&](int64_t a, int64_t e, float* out) { mla_target_rows(t, scale, a, e, out); };
        LayerEval& le = rep.layers[static_cast<size_t>(f) + j];
        le.layer = f + static_cast<int64_t>(j);
        le.source = f;
        le.stats.add(family_indexer_loss(ix.shape, ix.w[static_cast<size_t>(f)], in, nullptr));
      }
    });
  }
  rep.seconds = seconds_since(t0);
  return rep;
}

}  // namespace ic
