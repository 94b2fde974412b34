#include "model/dsa_family/model.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "io/tokenizer_json.h"
#include "model/dsa_family/cache.h"
#include "model/dsa_family/cpu_math.h"
#include "model/dsa_family/indexer.h"
#include "model/dsa_family/moe.h"
#include "model/dsa_family/random_weights.h"
#include "model/indexer.h"
#include "ops/indexer.h"
#include "parallel/local_group.h"

namespace ic {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Taps of score matrices stay small: a debugging aid, not a second copy of the indexer's work.
constexpr int64_t kMaxTappedScores = int64_t{1} << 22;

// The IndexCache pattern of a fresh load: the caller's, else config.json's, else all F.
LayerPattern initial_pattern(const hf::Folder& f, const MlaMoeConfig& c, const FamilyOptions& opt) {
  if (opt.pattern) {
    IC_CHECK(opt.pattern->n_layers() == c.n_layers, "{}: pattern {} has {} layers, the model {}", f.dir(),
             opt.pattern->str(), opt.pattern->n_layers(), c.n_layers);
    return *opt.pattern;
  }
  if (std::optional<LayerPattern> p = pattern_from_config(f.config(), c.n_layers, opt.rule)) return *p;
  return LayerPattern::all_full(c.n_layers);
}

}  // namespace

// The parallel path's state: each rank's weights and the group its threads meet in.
struct MlaMoeModel::Parallel {
  explicit Parallel(int n) : group(n) {}
  std::vector<dsa::RankShard> shards;
  parallel::LocalGroup group;
};

MlaMoeModel::MlaMoeModel(std::optional<hf::Folder> folder, std::string dir, MlaMoeConfig cfg)
    : folder_(std::move(folder)), dir_(std::move(dir)), cfg_(std::move(cfg)), rope_(cfg_.rope, cfg_.qk_rope_dim) {}

std::unique_ptr<MlaMoeModel> MlaMoeModel::load(const std::string& dir, Device device, const FamilyOptions& opt) {
  const hf::Folder f = hf::Folder::open(dir);
  MlaMoeConfig c = MlaMoeConfig::from_hf(f.config());
  if (device == Device::CUDA) {
    dsa::check_gpu_dims(c, dir);  // before anything is read: the dims error needs no GPU
    IC_CHECK(cuda_available(), "{}: asked for the GPU path, but {}", dir,
             cuda_compiled() ? "no usable CUDA device was found"
                             : "this build has no CUDA backend (configure with -DWITH_CUDA=ON)");
  }
  IC_CHECK(!opt.indexer_fp8 || device == Device::CUDA, "{}: the fp8 indexer runs on the GPU path (the CPU path is "
           "the reference, in f32)", dir);
  IC_CHECK(!opt.mtp || c.n_mtp_layers == 0,
           "{}: the checkpoint has {} MTP/NextN layer(s) (num_nextn_predict_layers); loading them is not "
           "implemented yet, run without the MTP option to skip them", dir, c.n_mtp_layers);
  std::unique_ptr<MlaMoeModel> m(new MlaMoeModel(f, f.dir(), std::move(c)));
  const MlaMoeConfig& cfg = m->cfg_;
  m->mla_form_ = opt.mla;
  if (cfg.has_indexer_arch()) {
    m->pattern_ = initial_pattern(f, cfg, opt);
  } else {
    IC_CHECK(!opt.pattern, "{}: {} is a dense MLA model without indexers; a layer pattern needs indexers", dir,
             cfg.architecture);
  }
  m->layers_.reserve(static_cast<size_t>(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    m->layers_.push_back(dsa::load_layer(f, cfg, l));
    // Only the F layers' indexers are read: S layers never run theirs.
    if (m->pattern_ && m->pattern_->is_full(l)) m->layers_.back().indexer = dsa::load_indexer(f, cfg, l);
  }
  m->embed_ = f.read_f32("model.embed_tokens.weight", {cfg.vocab, cfg.hidden});
  m->final_norm_ = f.read_f32("model.norm.weight", {cfg.hidden});
  m->lm_head_ = cfg.tie_word_embeddings ? m->embed_ : f.read_f32("lm_head.weight", {cfg.vocab, cfg.hidden});
  m->info_ = {cfg.model_type, cfg.architecture, cfg.n_layers, cfg.hidden, cfg.vocab, cfg.max_positions};
  m->load_tokenizer(f);
  if (device == Device::CUDA) {
    m->gpu_ = std::make_unique<dsa::GpuForward>(cfg, m->rope_, m->layers_, m->final_norm_, m->lm_head_);
    m->gpu_->set_indexer_fp8(opt.indexer_fp8);
  }
  m->set_parallel(opt.parallel);
  return m;
}

std::unique_ptr<MlaMoeModel> MlaMoeModel::random(const MlaMoeConfig& c, uint64_t seed, Device device,
                                                 const std::string& name, const FamilyOptions& opt) {
  c.validate(name);
  if (device == Device::CUDA) {
    dsa::check_gpu_dims(c, name);
    IC_CHECK(cuda_available(), "{}: asked for the GPU path, but {}", name,
             cuda_compiled() ? "no usable CUDA device was found"
                             : "this build has no CUDA backend (configure with -DWITH_CUDA=ON)");
  }
  IC_CHECK(!opt.mtp, "{}: MTP/NextN layers are not part of random-weight models", name);
  IC_CHECK(opt.parallel.single() || device == Device::CPU, "{}: --tp/--ep run on the CPU path so far (the GPU path "
           "is single-rank; docs/PARALLEL.md)", name);
  IC_CHECK(!opt.indexer_fp8 || device == Device::CUDA, "{}: the fp8 indexer runs on the GPU path (the CPU path is "
           "the reference, in f32)", name);
  std::unique_ptr<MlaMoeModel> m(new MlaMoeModel(std::nullopt, name, c));
  const MlaMoeConfig& cfg = m->cfg_;
  m->mla_form_ = opt.mla;
  if (cfg.has_indexer_arch()) {
    IC_CHECK(!opt.pattern || opt.pattern->n_layers() == cfg.n_layers, "{}: pattern {} has {} layers, the model {}",
             name, opt.pattern->str(), opt.pattern->n_layers(), cfg.n_layers);
    m->pattern_ = opt.pattern ? *opt.pattern : LayerPattern::all_full(cfg.n_layers);
  } else {
    IC_CHECK(!opt.pattern, "{}: {} is a dense MLA model without indexers; a layer pattern needs indexers", name,
             cfg.architecture);
  }
  m->embed_ = dsa::random_embedding(cfg, seed);
  m->info_ = {cfg.model_type, cfg.architecture, cfg.n_layers, cfg.hidden, cfg.vocab, cfg.max_positions};
  m->tokenizer_error_ = fmt::format("{}: a random-weight model has no tokenizer (it runs on token ids)", name);
  if (device == Device::CUDA) {
    m->gpu_ = std::make_unique<dsa::GpuForward>(cfg, m->rope_, seed);
    m->gpu_->set_indexer_fp8(opt.indexer_fp8);
    return m;
  }
  m->layers_.reserve(static_cast<size_t>(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) m->layers_.push_back(dsa::random_layer_weights(cfg, seed, l));
  m->final_norm_ = Tensor::empty({cfg.hidden}, DType::F32);
  dsa::fill_value(m->final_norm_, 1.0f);
  m->lm_head_ = dsa::random_lm_head(cfg, seed);
  m->set_parallel(opt.parallel);
  return m;
}

MlaMoeModel::~MlaMoeModel() = default;

dsa::GpuTap MlaMoeModel::gpu_tap() const {
  if (!tapped()) return {};
  return [this](const char* name, int layer, const Tensor& t) { dump(name, layer, t); };
}

// A tokenizer.json this build cannot read does not stop the model from running on token ids
// (search, perplexity on pre-tokenized data): its error is kept and raised where text is needed.
void MlaMoeModel::load_tokenizer(const hf::Folder& f) {
  if (f.tokenizer_json().empty()) {
    tokenizer_error_ = fmt::format("{}: no tokenizer.json in the folder", dir_);
    return;
  }
  try {
    auto t = std::make_unique<Tokenizer>(tokenizer_data_from_json_files(f.tokenizer_json(), f.tokenizer_config_json()));
    IC_CHECK(t->vocab_size() <= cfg_.vocab, "{}: the tokenizer has {} tokens, more than the {} embedding rows",
             f.tokenizer_json(), t->vocab_size(), cfg_.vocab);
    tokenizer_ = std::move(t);
  } catch (const Error& e) {
    tokenizer_error_ = e.what();
  }
}

const Tokenizer& MlaMoeModel::tokenizer() const {
  IC_CHECK(tokenizer_, "{}", tokenizer_error_);
  return *tokenizer_;
}

int64_t MlaMoeModel::weight_bytes() const {
  if (gpu_) return gpu_->weight_bytes();
  int64_t b = embed_.nbytes() + final_norm_.nbytes() + (cfg_.tie_word_embeddings ? 0 : lm_head_.nbytes());
  for (const dsa::LayerWeights& L : layers_) b += L.bytes();
  if (par_)
    for (const dsa::RankShard& s : par_->shards) b += dsa::shard_copy_bytes(s);
  return b;
}

bool MlaMoeModel::has_indexer(int64_t layer) const {
  if (layer < 0 || layer >= cfg_.n_layers) return false;
  if (attached_) return attached_->indexers[static_cast<size_t>(layer)].wq.defined();
  if (!folder_) return cfg_.has_indexer_arch();  // random weights: every layer has one
  return layers_[static_cast<size_t>(layer)].indexer.loaded();
}

int64_t MlaMoeModel::topk() const {
  if (!pattern_) return 0;
  return attached_ ? attached_->config.topk : cfg_.index_topk;
}

void MlaMoeModel::set_dsa(std::shared_ptr<const DsaSpec> spec) {
  IC_CHECK(!cfg_.has_indexer_arch(), "{}: {} carries its own indexers in its checkpoint; indexer files attach to "
           "the dense MLA architecture ({})", dir_, cfg_.architecture, "Glm4MoeLiteForCausalLM");
  IC_CHECK(!gpu_ || !spec, "{}: indexer files attached to a dense MLA model run on the CPU reference path only so "
           "far (this model is on the GPU)", dir_);
  if (spec) {
    IC_CHECK(spec->n_layers() == cfg_.n_layers && static_cast<int64_t>(spec->indexers.size()) == cfg_.n_layers,
             "indexers for {} layers (pattern {}) on a model of {}", spec->indexers.size(), spec->pattern.str(),
             cfg_.n_layers);
    for (int64_t l : spec->pattern.full_layers()) spec->indexers[static_cast<size_t>(l)].check(spec->config, cfg_.hidden);
    pattern_ = spec->pattern;
  } else {
    pattern_.reset();
  }
  attached_ = std::move(spec);
}

void MlaMoeModel::set_pattern(const LayerPattern& pattern) {
  if (!cfg_.has_indexer_arch()) {
    IC_CHECK(attached_, "{}: {} is a dense MLA model without indexers; a layer pattern needs indexers (attach an "
             "indexer file first)", dir_, cfg_.architecture);
    IC_CHECK(pattern.n_layers() == cfg_.n_layers, "set_pattern: pattern {} has {} layers, the model {}",
             pattern.str(), pattern.n_layers(), cfg_.n_layers);
    for (int64_t l : pattern.full_layers())
      IC_CHECK(has_indexer(l), "set_pattern: layer {} is F in pattern {} but the attached indexers have none for it",
               l, pattern.str());
    auto spec = std::make_shared<DsaSpec>(*attached_);
    spec->pattern = pattern;
    set_dsa(std::move(spec));
    return;
  }
  IC_CHECK(pattern.n_layers() == cfg_.n_layers, "set_pattern: pattern {} has {} layers, the model {}", pattern.str(),
           pattern.n_layers(), cfg_.n_layers);
  if (!folder_) {  // random weights: every indexer is there already
    pattern_ = pattern;
    return;
  }
  for (int64_t l : pattern.full_layers()) {
    if (has_indexer(l)) continue;
    IC_CHECK(dsa::folder_has_indexer(*folder_, l),
             "set_pattern: layer {} is F in pattern {} but {} has no indexer tensors for it ({}self_attn.indexer.*)", l,
             pattern.str(), dir_, dsa::layer_prefix(l));
  }
  for (int64_t l : pattern.full_layers())
    if (!has_indexer(l)) layers_[static_cast<size_t>(l)].indexer = dsa::load_indexer(*folder_, cfg_, l);
  pattern_ = pattern;
  if (gpu_) gpu_->sync_indexers(layers_, pattern);
}

void MlaMoeModel::set_parallel(const dsa::ParallelSpec& p) {
  if (p.single()) {
    par_.reset();
    parallel_spec_ = p;
    return;
  }
  IC_CHECK(!gpu_, "{}: --tp {} --ep {}: tensor and expert parallelism run on the CPU path so far (the GPU path is "
           "single-rank; docs/PARALLEL.md)", dir_, p.tp, p.ep);
  dsa::check_parallel(cfg_, p, dir_);
  auto par = std::make_unique<Parallel>(p.ranks());
  for (int r = 0; r < p.ranks(); ++r) par->shards.push_back(dsa::shard_model(cfg_, layers_, p, r));
  par_ = std::move(par);
  parallel_spec_ = p;
}

parallel::CommStats MlaMoeModel::comm_stats(int rank) const {
  if (!par_) return {};
  return par_->group.rank(rank).stats();
}

void MlaMoeModel::reset_comm_stats() {
  if (!par_) return;
  for (int r = 0; r < par_->group.size(); ++r) par_->group.rank(r).reset_stats();
}

std::unique_ptr<ModelCache> MlaMoeModel::make_cache(int64_t capacity) const {
  if (gpu_) return gpu_->make_cache(capacity, pattern());
  if (par_)
    return std::make_unique<dsa::ParallelCache>(cfg_, capacity, pattern(),
                                                attached_ ? attached_->config.head_dim : cfg_.index_head_dim,
                                                par_->group.size());
  return std::make_unique<dsa::MlaCache>(cfg_, capacity, pattern(),
                                         attached_ ? attached_->config.head_dim : cfg_.index_head_dim);
}

Tensor MlaMoeModel::embed(std::span<const int32_t> tokens) const {
  const int64_t n = static_cast<int64_t>(tokens.size()), D = cfg_.hidden;
  Tensor x = Tensor::empty({n, D}, DType::F32);
  for (int64_t i = 0; i < n; ++i) {
    IC_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab, "token id {} at position {} is outside the vocabulary [0, {})",
             tokens[i], i, cfg_.vocab);
    std::copy_n(embed_.data<float>() + tokens[i] * D, D, x.data<float>() + i * D);
  }
  return x;
}

Tensor MlaMoeModel::select(int64_t l, const Tensor& h, const Tensor& q_latent, Tensor& keys, int64_t p0, bool tap) {
  const dsa::LayerWeights& L = layers_[static_cast<size_t>(l)];
  IC_CHECK(has_indexer(l), "forward_layers: layer {} is F but its indexer is not loaded", l);
  IC_CHECK(keys.defined(), "forward_layers: layer {} is F but the cache has no indexer keys for it (make the cache "
           "after set_pattern)", l);
  const int64_t n = h.dim(0);
  const int li = static_cast<int>(l);
  if (attached_) return select_attached(l, h, keys, p0, tap);
  const dsa::IndexerActs a = dsa::indexer_project(cfg_, rope_, L.indexer, h, q_latent, p0);
  keys.slice_rows(p0, p0 + n).copy_from(a.k);
  if (tap) {
    dump("index_q", li, a.q);
    dump("index_k", li, a.k);
    dump("index_w", li, a.w);
    if (tapped() && n * (p0 + n) <= kMaxTappedScores) dump("index_scores", li, dsa::indexer_scores(a, keys, p0));
  }
  return dsa::indexer_select(a, keys, p0, cfg_.index_topk);
}

Tensor MlaMoeModel::select_attached(int64_t l, const Tensor& h, Tensor& keys, int64_t p0, bool tap) {
  const DsaSpec& spec = *attached_;
  const int64_t n = h.dim(0);
  Tensor pos = Tensor::empty({n}, DType::I32);
  for (int64_t i = 0; i < n; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(p0 + i);
  const IndexerActivations a = indexer_project(spec.config, spec.indexers[static_cast<size_t>(l)], h, pos);
  keys.slice_rows(p0, p0 + n).copy_from(a.k);
  const int li = static_cast<int>(l);
  if (tap) {
    dump("index_q", li, a.q);
    dump("index_k", li, a.k);
    dump("index_w", li, a.w);
  }
  Tensor topk = Tensor::empty({n, spec.config.topk}, DType::I32);
  ops::indexer_topk(a.q, keys.slice_rows(0, p0 + n), Tensor(), a.w, p0, topk);
  return topk;
}

void MlaMoeModel::check_forward(int64_t l0, int64_t l1, const Tensor& x, const ModelCache& cache, int64_t p0,
                                const IndexReuse& reuse) const {
  const MlaMoeConfig& c = cfg_;
  IC_CHECK(0 <= l0 && l0 <= l1 && l1 <= c.n_layers, "forward_layers: layers [{}, {}) outside [0, {})", l0, l1,
           c.n_layers);
  check_tensor(x, "forward_layers x", DType::F32, Device::CPU, 2);
  IC_CHECK(x.dim(1) == c.hidden, "forward_layers: x {} must have {} columns", x.desc(), c.hidden);
  const int64_t n = x.dim(0);
  IC_CHECK(p0 >= 0 && p0 + n <= cache.capacity(), "forward_layers: positions [{}, {}) exceed the cache capacity {}",
           p0, p0 + n, cache.capacity());
  if (reuse.sparse()) {
    IC_CHECK(pattern_, "forward_layers: {} is a dense MLA model; a layer pattern needs indexers", c.architecture);
    IC_CHECK(reuse.pattern().n_layers() == c.n_layers, "forward_layers: pattern {} has {} layers, the model {}",
             reuse.pattern().str(), reuse.pattern().n_layers(), c.n_layers);
  }
}

void MlaMoeModel::forward_layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0,
                                 IndexReuse& reuse) {
  if (gpu_) return gpu_->forward_layers(l0, l1, x, cache, p0, reuse, gpu_tap(), stats_);
  if (par_) return forward_parallel(l0, l1, x, cache, p0, reuse);
  const MlaMoeConfig& c = cfg_;
  auto* mc = dynamic_cast<dsa::MlaCache*>(&cache);
  IC_CHECK(mc, "forward_layers: the cache was not made by a DSA-family model on one rank (make it after "
           "set_parallel)");
  check_forward(l0, l1, x, cache, p0, reuse);
  const int64_t n = x.dim(0), H = c.n_heads;
  const double scale = c.softmax_scale();
  Tensor h = Tensor::empty({n, c.hidden}, DType::F32);
  Tensor att = Tensor::empty({n, H, c.v_head_dim}, DType::F32);
  for (int64_t l = l0; l < l1; ++l) {
    const dsa::LayerWeights& L = layers_[static_cast<size_t>(l)];
    const int li = static_cast<int>(l);
    dsa::rms_norm(x.data<float>(), n, c.hidden, c.hidden, L.input_norm, c.rms_norm_eps, h.data<float>(), c.hidden);
    dump("attn_norm", li, h);
    const dsa::MlaQuery q = dsa::mla_query(c, rope_, L.attn, h, p0);
    if (q.q_latent.defined()) dump("q_latent", li, q.q_latent);
    dump("q", li, q.q);
    const Tensor rows = dsa::mla_kv_rows(c, rope_, L.attn, h, p0);
    dump("kv_latent", li, rows);
    Tensor& kv = mc->kv(l);
    kv.slice_rows(p0, p0 + n).copy_from(rows);

    auto t_attn = Clock::now();
    const Tensor* selection = nullptr;
    if (reuse.sparse()) {
      if (reuse.runs_indexer(l)) {
        const auto t_index = Clock::now();
        reuse.publish(l, select(l, h, q.q_latent, mc->index_k(l), p0));
        stats_.indexer += seconds_since(t_index);
        ++stats_.indexer_layer_runs;
        t_attn = Clock::now();
      }
      selection = &reuse.selection(l);
      IC_CHECK(selection->dim(0) == n && selection->device() == Device::CPU,
               "forward_layers: layer {} was handed a selection {} for {} tokens on the CPU", l, selection->desc(), n);
      dump("topk", li, *selection);
    }
    const dsa::MlaAttendArgs args{&q.q, kv.data<float>(), selection, p0, scale};
    dsa::mla_attend(mla_form_, c, L.attn, args, att);
    stats_.attention += seconds_since(t_attn);
    dump("attn", li, att);
    dsa::linear(att.data<float>(), n, L.attn.o, L.attn.o_bias, h.data<float>());
    for (int64_t i = 0; i < n * c.hidden; ++i) x.data<float>()[i] += h.data<float>()[i];

    dsa::rms_norm(x.data<float>(), n, c.hidden, c.hidden, L.post_norm, c.rms_norm_eps, h.data<float>(), c.hidden);
    dump("ffn_norm", li, h);
    Tensor ffn;
    if (L.moe) {
      const dsa::Routing r = dsa::route(c, L.experts, h);
      dump("moe_route", li, r.ids);
      dump("moe_weights", li, r.weights);
      ffn = dsa::moe_forward(L.experts, r, h);
    } else {
      ffn = dsa::mlp_forward(L.mlp, h);
    }
    dump("ffn_out", li, ffn);
    for (int64_t i = 0; i < n * c.hidden; ++i) x.data<float>()[i] += ffn.data<float>()[i];
    dump("l_out", li, x);
  }
}

namespace {

// A rank's heads of an activation [n, H/N, d] gathered into every head, [n, H, d] (head-major by
// rank, as the shards cut them): a collective, for taps only.
Tensor gather_heads(parallel::Communicator& comm, const Tensor& t) {
  const int64_t n = t.dim(0), hl = t.dim(1), d = t.dim(2), N = comm.size(), m = t.numel();
  std::vector<float> all(static_cast<size_t>(N * m));
  comm.all_gather({t.data<float>(), static_cast<size_t>(m)}, all);
  Tensor out = Tensor::empty({n, hl * N, d}, DType::F32);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(all.data() + r * m + i * hl * d, hl * d, out.data<float>() + (i * hl * N + r * hl) * d);
  return out;
}

void add_into(Tensor& x, const Tensor& y) {
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += y.data<float>()[i];
}

}  // namespace

void MlaMoeModel::forward_parallel(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, int64_t p0,
                                   IndexReuse& reuse) {
  auto* pc = dynamic_cast<dsa::ParallelCache*>(&cache);
  const int N = par_->group.size();
  IC_CHECK(pc && pc->ranks() == N, "forward_layers: the model runs on {} ranks (--tp {}) but the cache was made for "
           "{} (make it after set_parallel)", N, parallel_spec_.tp, pc ? pc->ranks() : 1);
  check_forward(l0, l1, x, cache, p0, reuse);
  // Each rank's own residual stream and IndexReuse, as each GPU would hold them: copies of the
  // caller's (rank 0 works on the caller's own), which is what every rank's process would hold
  // after the same calls, since every rank computes the same selections.
  std::vector<Tensor> xs(static_cast<size_t>(N));
  std::vector<IndexReuse> reuses(static_cast<size_t>(N));
  for (int r = 1; r < N; ++r) {
    xs[r] = x.to(Device::CPU);
    reuses[r] = reuse;
  }
  std::vector<const Tensor*> published(static_cast<size_t>(N), nullptr);
  parallel::run_ranks(par_->group, [&](parallel::Communicator& comm) {
    const int r = comm.rank();
    forward_rank(comm, par_->shards[static_cast<size_t>(r)], l0, l1, r == 0 ? x : xs[r], pc->rank(r), p0,
                 r == 0 ? reuse : reuses[r], published);
  });
}

void MlaMoeModel::forward_rank(parallel::Communicator& comm, const dsa::RankShard& s, int64_t l0, int64_t l1,
                               Tensor& x, dsa::MlaCache& mc, int64_t p0, IndexReuse& reuse,
                               std::vector<const Tensor*>& published) {
  const MlaMoeConfig& c = cfg_;
  const MlaMoeConfig& cr = s.cfg;  // the rank's heads
  const bool lead = comm.rank() == 0;  // times, taps: rank 0 only (it runs on the caller's thread)
  const bool taps = tapped();
  const int64_t n = x.dim(0);
  const double scale = c.softmax_scale();
  Tensor h = Tensor::empty({n, c.hidden}, DType::F32);
  Tensor att = Tensor::empty({n, cr.n_heads, c.v_head_dim}, DType::F32);
  auto tap = [&](const char* name, int layer, const Tensor& t) {
    if (lead) dump(name, layer, t);
  };
  for (int64_t l = l0; l < l1; ++l) {
    const dsa::LayerWeights& L = layers_[static_cast<size_t>(l)];
    const dsa::RankLayer& R = s.layers[static_cast<size_t>(l)];
    const int li = static_cast<int>(l);
    dsa::rms_norm(x.data<float>(), n, c.hidden, c.hidden, L.input_norm, c.rms_norm_eps, h.data<float>(), c.hidden);
    tap("attn_norm", li, h);
    const dsa::MlaQuery q = dsa::mla_query(cr, rope_, R.attn, h, p0);
    if (q.q_latent.defined()) tap("q_latent", li, q.q_latent);
    if (taps) {
      const Tensor all = gather_heads(comm, q.q);
      tap("q", li, all);
    }
    const Tensor rows = dsa::mla_kv_rows(cr, rope_, R.attn, h, p0);  // replicated: every rank's own cache
    tap("kv_latent", li, rows);
    Tensor& kv = mc.kv(l);
    kv.slice_rows(p0, p0 + n).copy_from(rows);

    auto t_attn = Clock::now();
    const Tensor* selection = nullptr;
    if (reuse.sparse()) {
      if (reuse.runs_indexer(l)) {
        const auto t_index = Clock::now();
        reuse.publish(l, select(l, h, q.q_latent, mc.index_k(l), p0, lead));
        if (lead) {
          stats_.indexer += seconds_since(t_index);
          ++stats_.indexer_layer_runs;
        }
        // The indexer is replicated, so its top-k must be the same on every rank: checked here
        // (the in-process group's check; the design needs no communication for it).
        const Tensor& mine = reuse.selection(l);
        published[static_cast<size_t>(comm.rank())] = &mine;
        comm.barrier();
        const Tensor& first = *published[0];
        IC_CHECK(mine.numel() == first.numel() &&
                     std::equal(mine.data<int32_t>(), mine.data<int32_t>() + mine.numel(), first.data<int32_t>()),
                 "forward_layers: layer {}: rank {}'s top-k differs from rank 0's (the indexer's inputs were not "
                 "replicated)", l, comm.rank());
        comm.barrier();
        t_attn = Clock::now();
      }
      selection = &reuse.selection(l);
      IC_CHECK(selection->dim(0) == n && selection->device() == Device::CPU,
               "forward_layers: layer {} was handed a selection {} for {} tokens on the CPU", l, selection->desc(), n);
      tap("topk", li, *selection);
    }
    const dsa::MlaAttendArgs args{&q.q, kv.data<float>(), selection, p0, scale};
    dsa::mla_attend(mla_form_, cr, R.attn, args, att);
    if (lead) stats_.attention += seconds_since(t_attn);
    if (taps) {
      const Tensor all = gather_heads(comm, att);
      tap("attn", li, all);
    }
    // o_proj of the rank's heads (its columns), summed over the ranks.
    dsa::linear(att.data<float>(), n, R.attn.o, R.attn.o_bias, h.data<float>());
    comm.all_reduce_sum({h.data<float>(), static_cast<size_t>(h.numel())});
    add_into(x, h);

    dsa::rms_norm(x.data<float>(), n, c.hidden, c.hidden, L.post_norm, c.rms_norm_eps, h.data<float>(), c.hidden);
    tap("ffn_norm", li, h);
    Tensor ffn;
    if (L.moe) {
      const dsa::Routing r = dsa::route(c, L.experts, h);  // replicated router: the same choice everywhere
      tap("moe_route", li, r.ids);
      tap("moe_weights", li, r.weights);
      if (s.a2a) {
        ffn = dsa::moe_forward_a2a(comm, R, r, h);  // replicated already
      } else {
        ffn = dsa::moe_forward_part(R.experts, R.expert_begin, R.expert_end, R.shared, r, h);
        comm.all_reduce_sum({ffn.data<float>(), static_cast<size_t>(ffn.numel())});
      }
    } else {
      ffn = dsa::mlp_forward(R.mlp, h);
      comm.all_reduce_sum({ffn.data<float>(), static_cast<size_t>(ffn.numel())});
    }
    tap("ffn_out", li, ffn);
    add_into(x, ffn);
    tap("l_out", li, x);
  }
}

Tensor MlaMoeModel::final_logits(const Tensor& x) {
  check_tensor(x, "output x", DType::F32, Device::CPU, 2);
  IC_CHECK(x.dim(1) == cfg_.hidden, "output: x {} must have {} columns", x.desc(), cfg_.hidden);
  Tensor normed = Tensor::empty(x.shape(), DType::F32);
  dsa::rms_norm(x.data<float>(), x.dim(0), cfg_.hidden, cfg_.hidden, final_norm_, cfg_.rms_norm_eps,
                normed.data<float>(), cfg_.hidden);
  dump("result_norm", -1, normed);
  return dsa::linear(normed, lm_head_);
}

void MlaMoeModel::output_logits(const Tensor& x, float* logits) {
  if (gpu_) return gpu_->output_logits(x, logits, gpu_tap());
  const Tensor z = final_logits(x);
  std::copy_n(z.data<float>(), z.numel(), logits);
}

void MlaMoeModel::output_logprobs(const Tensor& x, std::span<const int32_t> targets, float* out) {
  if (gpu_) return gpu_->output_logprobs(x, targets, out, gpu_tap());
  const int64_t rows = x.dim(0), V = cfg_.vocab;
  IC_CHECK(static_cast<int64_t>(targets.size()) == rows, "output_logprobs: {} targets for {} rows", targets.size(),
           rows);
  if (rows == 0) return;
  const Tensor z = final_logits(x);
  for (int64_t r = 0; r < rows; ++r) {
    IC_CHECK(targets[r] >= 0 && targets[r] < V, "output_logprobs: target {} of row {} is outside [0, {})", targets[r],
             r, V);
    const float* zr = z.data<float>() + r * V;
    double m = zr[0];
    for (int64_t v = 1; v < V; ++v) m = std::max(m, static_cast<double>(zr[v]));
    double s = 0.0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(zr[v] - m);
    out[r] = static_cast<float>(zr[targets[r]] - m - std::log(s));
  }
}

std::unique_ptr<Model> load_dsa_family(const std::string& dir, Device device, const FamilyOptions& opt) {
  return MlaMoeModel::load(dir, device, opt);
}

}  // namespace ic
