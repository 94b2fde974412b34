#include "indexcache/trainer.h"

#include <chrono>
#include <filesystem>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "indexcache/teacher.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace ic {

namespace {

constexpr const char* kCheckpointFormat = "distill-checkpoint-v1";
constexpr const char* kParts[5] = {"wq", "wk", "k_norm", "k_bias", "wproj"};

Tensor& part(IndexerWeights& w, int i) {
  Tensor* t[] = {&w.wq, &w.wk, &w.k_norm, &w.k_bias, &w.wproj};
  return *t[i];
}
const Tensor& part(const IndexerWeights& w, int i) { return part(const_cast<IndexerWeights&>(w), i); }

std::string weight_name(int64_t layer, int i) { return fmt::format("blk.{}.indexer.{}", layer, kParts[i]); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The first layer after `l` that is F, or n_layers: l serves l .. end-1.
int64_t group_end(const LayerPattern& p, int64_t l) {
  int64_t e = l + 1;
  while (e < p.n_layers() && !p.is_full(e)) ++e;
  return e;
}

std::string file_identity(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  IC_CHECK(!ec, "distill: cannot stat '{}': {}", path, ec.message());
  return fmt::format("{} ({} bytes)", std::filesystem::path(path).filename().string(), size);
}

int64_t meta_int(const safetensors::File& f, const char* key) {
  const std::string& v = f.metadata(key);
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  fail("{}: metadata {} = '{}' is not an integer", f.path(), key, v);
}

void scale_weights(IndexerWeights& g, float s) {
  for (int i = 0; i < 5; ++i) {
    float* d = part(g, i).data<float>();
    for (int64_t j = 0; j < part(g, i).numel(); ++j) d[j] *= s;
  }
}

}  // namespace

const char* distill_mode_name(DistillMode m) { return m == DistillMode::kWarmup ? "warmup" : "pattern"; }

DistillMode distill_mode_from_string(const std::string& s) {
  if (s == "warmup") return DistillMode::kWarmup;
  if (s == "pattern") return DistillMode::kPattern;
  fail("distill: unknown mode '{}' (supported: warmup, pattern)", s);
}

std::vector<LayerCapture> capture_layers(LlamaModel& model, std::span<const int32_t> tokens, Device device) {
  IC_CHECK(model.dsa() == nullptr, "distill: the teacher model must run dense (a DSA spec is attached)");
  const LlamaConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<LayerCapture> caps(static_cast<size_t>(c.n_layers));
  for (LayerCapture& cap : caps) {
    cap.x = Tensor::empty({n, c.dim}, DType::F32, device);
    cap.q = Tensor::empty({n, c.n_heads, c.head_dim}, DType::F32, device);
    cap.k = Tensor::empty({n, c.n_kv_heads, c.head_dim}, DType::F32, device);
  }
  // The forward runs in chunks and reports each layer's rows chunk by chunk, attn_norm first.
  std::vector<int64_t> filled(caps.size(), 0), chunk_at(caps.size(), 0);
  model.set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) {
    if (layer < 0) return;
    const size_t l = static_cast<size_t>(layer);
    Tensor* dst = nullptr;
    if (name == "attn_norm") {
      chunk_at[l] = filled[l];
      filled[l] += t.dim(0);
      dst = &caps[l].x;
    } else if (name == "q") {
      dst = &caps[l].q;
    } else if (name == "k") {
      dst = &caps[l].k;
    } else {
      return;
    }
    IC_ASSERT(chunk_at[l] + t.dim(0) <= n);
    Tensor rows = dst->slice_rows(chunk_at[l], chunk_at[l] + t.dim(0));
    if (device == Device::CPU)
      rows.copy_from(t.device() == Device::CPU ? t : t.to(Device::CPU));
    else
      rows.copy_from(t);  // device to device when the model runs on the GPU
  });
  KVCache kv = model.make_kv(n);
  Tensor logits;  // forward computes the last row only
  try {
    model.forward(tokens, kv, logits, false);
  } catch (...) {
    model.set_tensor_callback(nullptr);
    throw;
  }
  model.set_tensor_callback(nullptr);
  for (size_t l = 0; l < caps.size(); ++l) IC_ASSERT(filled[l] == n);
  return caps;
}

Trainer::Trainer(LlamaModel& model, const TextWindows& data, TrainerConfig cfg)
    : model_(&model), data_(&data), cfg_(std::move(cfg)), stream_(data, cfg_.seed) {
  const LlamaConfig& mc = model.config();
  dim_ = mc.dim;
  IC_CHECK(model.dsa() == nullptr, "distill: the model must run dense (the teacher); do not attach indexers");
  IC_CHECK(cfg_.batch >= 1, "distill: batch must be >= 1, got {}", cfg_.batch);
  IC_CHECK(data.ctx() <= mc.context_max, "distill: ctx {} exceeds the model's trained context {}", data.ctx(),
           mc.context_max);
  cfg_.indexer.validate(dim_);
  cfg_.adamw.validate();
  IC_CHECK(cfg_.device == Device::CPU || cuda_available(),
           "distill: the loss on {} needs a CUDA build (-DWITH_CUDA=ON) and a usable GPU ({})",
           device_name(cfg_.device), cuda_compiled() ? "no GPU found" : "this build has no CUDA backend");
  if (cfg_.mode == DistillMode::kWarmup) {
    pattern_ = LayerPattern::all_full(mc.n_layers);
  } else {
    IC_CHECK(cfg_.pattern.n_layers() == mc.n_layers, "distill: pattern '{}' has {} layers, the model has {}",
             cfg_.pattern.str(), cfg_.pattern.n_layers(), mc.n_layers);
    pattern_ = cfg_.pattern;
  }

  weights_.resize(static_cast<size_t>(mc.n_layers));
  opt_.resize(static_cast<size_t>(mc.n_layers));
  std::optional<DsaSpec> init;
  if (!cfg_.init_path.empty()) {
    init = load_indexers(cfg_.init_path, mc.n_layers, dim_, pattern_, cfg_.indexer.topk);
    const IndexerConfig &a = init->config, &b = cfg_.indexer;
    IC_CHECK(a.n_heads == b.n_heads && a.head_dim == b.head_dim && a.rope_dim == b.rope_dim &&
                 a.rope_style == b.rope_style && a.rope_base == b.rope_base && a.norm_eps == b.norm_eps,
             "distill: --init {} holds indexers of {} heads x {} (rope {} {}, base {}, eps {}), the run asks for {} x {} "
             "(rope {} {}, base {}, eps {})",
             cfg_.init_path, a.n_heads, a.head_dim, a.rope_dim, ops::rope_style_name(a.rope_style), a.rope_base,
             a.norm_eps, b.n_heads, b.head_dim, b.rope_dim, ops::rope_style_name(b.rope_style), b.rope_base,
             b.norm_eps);
  }
  for (int64_t l = 0; l < mc.n_layers; ++l) {
    if (!pattern_.is_full(l)) continue;
    // Same per-layer seeds as `indexcache init-indexers`, so -s N there and here agree.
    weights_[l] = init ? init->indexers[l] : IndexerWeights::random(cfg_.indexer, dim_, cfg_.seed * 1000003 + l);
    opt_[l] = std::make_unique<AdamW>(cfg_.adamw, cfg_.indexer, dim_);
  }

  const IndexerConfig& ic = cfg_.indexer;
  const AdamWConfig& ac = cfg_.adamw;
  fields_ = {
      {"model", file_identity(model.path())},
      {"data.fingerprint", data.fingerprint()},
      {"data.windows", std::to_string(data.n_windows())},
      {"ctx", std::to_string(data.ctx())},
      {"batch", std::to_string(cfg_.batch)},
      {"steps", std::to_string(ac.total_steps)},
      {"lr", fmt::format("{}", ac.lr)},
      {"min_lr", fmt::format("{}", ac.min_lr)},
      {"warmup_steps", std::to_string(ac.warmup_steps)},
      {"beta1", fmt::format("{}", ac.beta1)},
      {"beta2", fmt::format("{}", ac.beta2)},
      {"eps", fmt::format("{}", ac.eps)},
      {"weight_decay", fmt::format("{}", ac.weight_decay)},
      {"clip_norm", fmt::format("{}", ac.clip_norm)},
      {"seed", std::to_string(cfg_.seed)},
      {"mode", distill_mode_name(cfg_.mode)},
      {"pattern", pattern_.str()},
      {"indexer.n_heads", std::to_string(ic.n_heads)},
      {"indexer.head_dim", std::to_string(ic.head_dim)},
      {"indexer.rope_dim", std::to_string(ic.rope_dim)},
      {"indexer.rope_style", std::string(ops::rope_style_name(ic.rope_style))},
      {"indexer.rope_base", fmt::format("{}", ic.rope_base)},
      {"indexer.norm_eps", fmt::format("{}", ic.norm_eps)},
      {"indexer.topk", std::to_string(ic.topk)},
      {"init", cfg_.init_path.empty() ? std::string("random") : file_identity(cfg_.init_path)},
  };
}

StepReport Trainer::step() {
  IC_CHECK(!done(), "distill: all {} steps are done", cfg_.adamw.total_steps);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = pattern_.n_layers();
  const std::vector<int64_t> full = pattern_.full_layers();
  std::vector<IndexerWeights> grad(static_cast<size_t>(L));
  std::vector<DistillStats> stats(static_cast<size_t>(L));
  for (int64_t l : full) grad[l] = IndexerWeights::zeros(cfg_.indexer, dim_);

  StepReport r;
  if (cfg_.device == Device::CUDA)
    gpu_batch(full, grad, stats, r);
  else
    cpu_batch(full, grad, stats, r);
  for (int64_t l : full) {
    // The loss is a sum over rows; its gradient, divided by the rows, is that of the mean KL.
    if (stats[l].rows > 0) scale_weights(grad[l], 1.0f / static_cast<float>(stats[l].rows));
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
  return r;
}

// The batch of one step on the host.
void Trainer::cpu_batch(const std::vector<int64_t>& full, std::vector<IndexerWeights>& grad,
                        std::vector<DistillStats>& stats, StepReport& r) {
  for (int64_t b = 0; b < cfg_.batch; ++b) {
    const std::span<const int32_t> window = stream_.next();
    r.tokens += static_cast<int64_t>(window.size());
    auto t = std::chrono::steady_clock::now();
    const std::vector<LayerCapture> caps = capture_layers(*model_, window);
    r.forward_s += seconds_since(t);
    for (int64_t l : full) {
      // The targets of the layers l serves (only l itself in warm-up, where every layer is F).
      t = std::chrono::steady_clock::now();
      std::vector<Tensor> targets;
      for (int64_t j = l; j < group_end(pattern_, l); ++j) targets.push_back(attention_targets(caps[j].q, caps[j].k));
      r.teacher_s += seconds_since(t);
      t = std::chrono::steady_clock::now();
      const DistillStats s =
          targets.size() == 1
              ? distill_loss(cfg_.indexer, weights_[l], DistillInput{caps[l].x, targets[0], Tensor()}, &grad[l])
              : distill_loss_multi(cfg_.indexer, weights_[l], caps[l].x, targets, Tensor(), MultiLayerForm::kMeanTarget,
                                   &grad[l]);
      stats[l].add(s);
      r.loss_s += seconds_since(t);
    }
  }
}

// The batch of one step with targets, loss and gradient on the GPU: the weights go up once,
// the gradients come down once; p is made, averaged and consumed on the device.
void Trainer::gpu_batch(const std::vector<int64_t>& full, std::vector<IndexerWeights>& grad,
                        std::vector<DistillStats>& stats, StepReport& r) {
  std::vector<IndexerWeights> w(grad.size()), g(grad.size());
  for (int64_t l : full) {
    w[l] = weights_to(weights_[l], Device::CUDA);
    g[l] = weights_to(grad[l], Device::CUDA);  // zeros
  }
  for (int64_t b = 0; b < cfg_.batch; ++b) {
    const std::span<const int32_t> window = stream_.next();
    r.tokens += static_cast<int64_t>(window.size());
    auto t = std::chrono::steady_clock::now();
    const std::vector<LayerCapture> caps = capture_layers(*model_, window, Device::CUDA);
    r.forward_s += seconds_since(t);
    for (int64_t l : full) {
      t = std::chrono::steady_clock::now();
      std::vector<Tensor> targets;
      for (int64_t j = l; j < group_end(pattern_, l); ++j) targets.push_back(attention_targets(caps[j].q, caps[j].k));
      // L_multi through the mean target (the same gradient; distill_loss_multi's kMeanTarget).
      const Tensor p = targets.size() == 1 ? targets[0] : mean_targets(targets);
      cuda::synchronize();  // so the phase times are honest
      r.teacher_s += seconds_since(t);
      t = std::chrono::steady_clock::now();
      stats[l].add(distill_loss_cuda(cfg_.indexer, w[l], DistillInput{caps[l].x, p, Tensor()}, &g[l]));
      r.loss_s += seconds_since(t);
    }
  }
  for (int64_t l : full) grad[l] = weights_to(g[l], Device::CPU);
}

void Trainer::save_checkpoint(const std::string& path) const {
  safetensors::Writer w;
  w.set_metadata("indexcache.format", kCheckpointFormat);
  w.set_metadata("distill.step", std::to_string(step_));
  w.set_metadata("distill.epoch", std::to_string(stream_.position().epoch));
  w.set_metadata("distill.index", std::to_string(stream_.position().index));
  for (const auto& [k, v] : fields_) w.set_metadata("distill.cfg." + k, v);
  for (int64_t l : pattern_.full_layers()) {
    for (int i = 0; i < 5; ++i) w.add(weight_name(l, i), part(weights_[l], i));
    for (const auto& [name, t] : opt_[l]->state()) w.add(fmt::format("opt.{}.{}", l, name), t);
  }
  w.write(path);  // atomic: temp file, fsync, rename
}

void Trainer::resume(const std::string& path) {
  const safetensors::File f = safetensors::File::open(path);
  const std::string* format = f.find_metadata("indexcache.format");
  IC_CHECK(format && *format == kCheckpointFormat, "{}: not a distill checkpoint (indexcache.format is {})", path,
           format ? "'" + *format + "'" : std::string("missing"));
  for (const auto& [k, v] : fields_) {
    const std::string* got = f.find_metadata("distill.cfg." + k);
    IC_CHECK(got, "{}: checkpoint has no '{}' setting; cannot check it matches this run ({})", path, k, v);
    IC_CHECK(*got == v, "{}: checkpoint was made with {} = '{}', this run has {} = '{}'; resume needs the same run",
             path, k, *got, k, v);
  }
  const int64_t step = meta_int(f, "distill.step");
  IC_CHECK(step >= 0 && step <= cfg_.adamw.total_steps, "{}: checkpoint step {} is outside [0, {}]", path, step,
           cfg_.adamw.total_steps);
  const LoaderPosition pos{meta_int(f, "distill.epoch"), meta_int(f, "distill.index")};

  IC_CHECK(pos.epoch * data_->n_windows() + pos.index == step * cfg_.batch,
           "{}: data position (epoch {}, index {}) does not follow from step {} x batch {} over {} windows", path,
           pos.epoch, pos.index, step, cfg_.batch, data_->n_windows());

  // Everything is read into new objects first, so a bad checkpoint leaves the trainer as it was.
  std::vector<IndexerWeights> weights(weights_.size());
  std::vector<std::unique_ptr<AdamW>> opt(opt_.size());
  for (int64_t l : pattern_.full_layers()) {
    for (int i = 0; i < 5; ++i) {
      const std::string name = weight_name(l, i);
      IC_CHECK(f.find(name), "{}: checkpoint lacks {} (F layer {} of {})", path, name, l, pattern_.str());
      part(weights[l], i) = f.read_f32(name);
    }
    weights[l].check(cfg_.indexer, dim_);
    const std::string prefix = fmt::format("opt.{}.", l);
    std::vector<std::pair<std::string, Tensor>> state;
    for (const safetensors::TensorInfo& t : f.tensors())
      if (t.name.compare(0, prefix.size(), prefix) == 0) state.emplace_back(t.name.substr(prefix.size()), f.tensor_view(t));
    opt[l] = std::make_unique<AdamW>(cfg_.adamw, cfg_.indexer, dim_);
    try {
      opt[l]->load_state(state);
    } catch (const Error& e) {
      fail("{}: layer {}: {}", path, l, e.what());
    }
    IC_CHECK(opt[l]->steps() == step, "{}: layer {}'s optimizer is at step {}, the checkpoint at {}", path, l,
             opt[l]->steps(), step);
  }
  stream_.seek(pos);
  weights_ = std::move(weights);
  opt_ = std::move(opt);
  step_ = step;
}

DsaSpec Trainer::spec() const {
  DsaSpec s;
  s.config = cfg_.indexer;
  s.pattern = pattern_;
  s.indexers.resize(weights_.size());
  for (int64_t l : pattern_.full_layers())
    for (int i = 0; i < 5; ++i) part(s.indexers[l], i) = part(weights_[l], i).to(Device::CPU);
  return s;
}

std::vector<std::pair<std::string, Tensor>> Trainer::optimizer_state(int64_t layer) const {
  IC_CHECK(layer >= 0 && layer < pattern_.n_layers() && opt_[layer], "distill: layer {} has no optimizer (not F in {})",
           layer, pattern_.str());
  return opt_[layer]->state();
}

double EvalReport::mean_kl() const {
  double s = 0.0;
  for (const LayerEval& e : layers) s += e.stats.mean_kl();
  return layers.empty() ? 0.0 : s / static_cast<double>(layers.size());
}

double EvalReport::recall() const {
  double s = 0.0;
  for (const LayerEval& e : layers) s += e.stats.recall();
  return layers.empty() ? 0.0 : s / static_cast<double>(layers.size());
}

EvalReport evaluate(LlamaModel& model, const DsaSpec& spec, const TextWindows& heldout, Device device) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model.config().n_layers;
  IC_CHECK(spec.n_layers() == L, "evaluate: pattern {} has {} layers, the model {}", spec.pattern.str(),
           spec.n_layers(), L);
  EvalReport r;
  for (int64_t l = 0; l < L; ++l) r.layers.push_back({l, spec.pattern.source(l), {}});
  IC_CHECK(device == Device::CPU || cuda_available(), "evaluate: no usable CUDA device for the loss on cuda");
  std::vector<IndexerWeights> gpu_weights(static_cast<size_t>(L));  // uploaded once
  if (device == Device::CUDA)
    for (int64_t l : spec.pattern.full_layers()) gpu_weights[l] = weights_to(spec.indexers[l], Device::CUDA);
  for (int64_t i = 0; i < heldout.n_windows(); ++i) {
    const std::span<const int32_t> window = heldout.window(i);
    const std::vector<LayerCapture> caps = capture_layers(model, window, device);
    for (LayerEval& e : r.layers) {
      const Tensor p = attention_targets(caps[e.layer].q, caps[e.layer].k);
      const DistillInput in{caps[e.source].x, p, Tensor()};
      e.stats.add(device == Device::CUDA ? distill_loss_cuda(spec.config, gpu_weights[e.source], in, nullptr)
                                         : distill_loss(spec.config, spec.indexers[e.source], in, nullptr));
    }
    ++r.windows;
    r.tokens += static_cast<int64_t>(window.size());
  }
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace ic
