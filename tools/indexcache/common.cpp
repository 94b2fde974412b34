#include "common.h"

#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/dsa_family/model.h"
#include "model/load_model.h"

namespace ic::cli {

void add_model_options(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("-m,--model", o.model, "GGUF model file (default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  cmd->add_option("-t,--threads", o.threads, "CPU threads (default: all cores)");
  cmd->add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--indexers", o.indexers, "Lightning-indexer file (safetensors): run as a DSA model");
  cmd->add_option("--pattern", o.pattern, "IndexCache layer pattern, one F/S letter per layer (default: the file's)");
  cmd->add_option("--index-freq", o.index_freq, "Keep an indexer every N layers (index_topk_freq)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--index-offset", o.index_offset, "Leading layers that keep their indexer (index_skip_topk_offset)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--topk", o.topk, "Keys each query attends to (default: the file's)")->check(CLI::PositiveNumber);
  cmd->add_option("--pattern-rule", o.pattern_rule,
                  "How a DSA checkpoint's config.json IndexCache knobs are read: hf, sglang or thudm (docs/FAMILY.md)")
      ->check(CLI::IsMember({"hf", "sglang", "thudm"}));
  cmd->add_flag("--mtp", o.mtp, "Load a DSA checkpoint's MTP/NextN layer (always F)");
  cmd->add_option("--random-weights", o.random_weights,
                  "Instead of -m: a DSA-family model of random weights in the exact layout, from a preset "
                  "(glm47-flash-dsa, deepseek-v32, glm5) or a config.json; for speed runs only");
  cmd->add_option("--weights-seed", o.weights_seed, "Seed of --random-weights");
  cmd->add_option("--layers", o.layers, "Only the first N layers of a --random-weights model (quick checks)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--indexer-fp8", o.indexer_fp8,
                "DSA family on the GPU: the indexer in fp8 (e4m3 q and keys, one scale per row), as DeepSeek's "
                "inference runs it; default bf16");
  add_parallel_options(cmd, o);
}

void add_parallel_options(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("--tp", o.tp, "DSA family on the CPU: tensor parallelism over N ranks, run as N threads "
                  "(heads, MLP and shared-expert channels split; docs/PARALLEL.md)")->check(CLI::PositiveNumber);
  cmd->add_option("--ep", o.ep, "DSA family on the CPU: routed experts split by expert over the --tp ranks (N = "
                  "--tp), or 1: each expert split by channel")->check(CLI::PositiveNumber);
  cmd->add_flag("--ep-a2a", o.ep_a2a, "With --ep N = --tp N: the MoE block by all-to-all dispatch and combine (tokens "
                "split over the ranks, then all-gathered) instead of an all-reduce");
}

namespace {
// --pattern / --index-freq as a pattern over L layers, nullopt when neither is given.
std::optional<LayerPattern> pattern_option(const ModelOptions& o, int64_t L) {
  IC_CHECK(o.pattern.empty() || o.index_freq == 0, "give --pattern or --index-freq, not both");
  IC_CHECK(o.index_offset == 1 || o.index_freq > 0, "--index-offset only means something with --index-freq");
  if (!o.pattern.empty()) return LayerPattern::parse(o.pattern, L);
  if (o.index_freq > 0) return LayerPattern::from_freq(L, o.index_freq, o.index_offset);
  return std::nullopt;
}

// --tp / --ep on a loaded model: the DSA family's in-process ranks (model/dsa_family/shard.h).
void apply_parallel(const ModelOptions& o, Model& m, bool quiet) {
  if (o.tp == 1 && o.ep == 1 && !o.ep_a2a) return;
  IC_CHECK(m.device() == Device::CPU, "--tp {} --ep {}: tensor and expert parallelism run on the CPU path so far (the "
           "GPU path is single-rank; docs/PARALLEL.md)", o.tp, o.ep);
  auto* f = dynamic_cast<MlaMoeModel*>(&m);
  IC_CHECK(f, "--tp {} --ep {}: tensor and expert parallelism apply to the DSA family (HF model folders and "
           "--random-weights); {} is a {} model", o.tp, o.ep, m.path(), m.info().family);
  f->set_parallel({o.tp, o.ep, o.ep_a2a});
  if (!quiet)
    std::fprintf(stderr, "parallel: --tp %d --ep %d, %d ranks as threads of this process (routed experts split %s)\n",
                 o.tp, o.ep, o.tp, o.ep_a2a ? "by expert, all-to-all" : o.ep > 1 ? "by expert" : "by channel");
}

void report_load(const Model& m, double seconds) {
  const ModelInfo& c = m.info();
  std::fprintf(stderr, "loaded %s (%s): %lld layers, width %lld, vocab %lld, %.1f MiB of weights on %s, %.2f s, "
               "%d threads\n", m.path().c_str(), c.architecture.c_str(), (long long)c.n_layers, (long long)c.dim,
               (long long)c.vocab, m.weight_bytes() / 1048576.0, std::string(device_name(m.device())).c_str(), seconds,
               omp_get_max_threads());
}
}  // namespace

std::unique_ptr<Model> load_model(const ModelOptions& o, bool quiet) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  // Before a long load: the GPU path does not take them.
  IC_CHECK((o.tp == 1 && o.ep == 1 && !o.ep_a2a) || o.device != "cuda", "--tp {} --ep {} with --device cuda: tensor and expert "
           "parallelism run on the CPU path so far (the GPU path is single-rank; docs/PARALLEL.md)", o.tp, o.ep);
  IC_CHECK(o.random_weights.empty() || o.model.empty(), "give -m or --random-weights, not both");
  IC_CHECK(o.layers == 0 || !o.random_weights.empty(), "--layers truncates --random-weights models only");
  if (!o.random_weights.empty()) {
    IC_CHECK(o.indexers.empty(), "--indexers attach to checkpoints; --random-weights models carry their own");
    LoadOptions lo;
    lo.device = o.device == "cuda" ? Device::CUDA : Device::CPU;
    lo.mtp = o.mtp;
    lo.indexer_fp8 = o.indexer_fp8;
    if (!o.pattern.empty() || o.index_freq > 0) lo.pattern = [&o](int64_t L) { return pattern_option(o, L); };
    const auto t0 = std::chrono::steady_clock::now();
    auto m = ic::load_random_model(o.random_weights, o.weights_seed, o.layers, lo);
    apply_parallel(o, *m, quiet);
    if (!quiet) report_load(*m, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return m;
  }
  const std::string path = resolve_model_path(o.model);
  LoadOptions lo;
  lo.device = o.device == "cuda" ? Device::CUDA : Device::CPU;
  lo.mtp = o.mtp;
  lo.indexer_fp8 = o.indexer_fp8;
  lo.rule = parse_pattern_rule(o.pattern_rule);
  // A DSA checkpoint loads only the chosen pattern's indexers, so the pattern goes in at load.
  if (is_hf_folder(path) && (!o.pattern.empty() || o.index_freq > 0))
    lo.pattern = [&o](int64_t L) { return pattern_option(o, L); };
  const auto t0 = std::chrono::steady_clock::now();
  auto m = ic::load_model(path, lo);
  apply_parallel(o, *m, quiet);
  if (!quiet) report_load(*m, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  apply_dsa(o, *m, quiet);
  return m;
}

std::unique_ptr<LlamaModel> load_llama(const ModelOptions& o, const char* command, bool quiet) {
  const std::string path = resolve_model_path(o.model);
  IC_CHECK(!is_hf_folder(path), "{} -m {}: this command runs on llama-family GGUF models with --indexers files so "
           "far; the DSA family (HF model folders) is not supported by it yet", command, path);
  std::unique_ptr<Model> m = load_model(o, quiet);
  std::unique_ptr<LlamaModel> lm(dynamic_cast<LlamaModel*>(m.get()));
  IC_ASSERT(lm);
  m.release();
  return lm;
}

void apply_dsa(const ModelOptions& o, Model& m, bool quiet) {
  const int64_t L = m.info().n_layers;
  auto* llama = dynamic_cast<LlamaModel*>(&m);
  if (!llama) {
    // A DSA checkpoint carries its indexers; the options only choose its F layers.
    IC_CHECK(o.indexers.empty(), "--indexers attaches indexer files to llama-family models; {} carries its own",
             m.path());
    IC_CHECK(o.topk == 0, "--topk is not supported for {} models yet (their k is the checkpoint's)", m.info().family);
    if (!quiet && m.pattern())
      std::fprintf(stderr, "DSA: pattern %s (%lld of %lld layers F), top-k %lld\n", m.pattern()->str().c_str(),
                   (long long)m.pattern()->n_full(), (long long)L, (long long)m.topk());
    return;
  }
  if (o.indexers.empty()) {
    IC_CHECK(o.pattern.empty() && o.index_freq == 0 && o.topk == 0,
             "--pattern, --index-freq and --topk need --indexers FILE (without it the model runs dense)");
    return;
  }
  const std::optional<LayerPattern> pattern = pattern_option(o, L);
  auto spec = std::make_shared<DsaSpec>(load_indexers(o.indexers, L, llama->config().dim, pattern,
                                                      o.topk > 0 ? std::optional<int64_t>(o.topk) : std::nullopt));
  if (!quiet) {
    const DsaSpec& d = *spec;
    const int64_t n_full = d.pattern.n_full();
    // Indexer work per token and context position: H dot products of length d plus H weights.
    std::fprintf(stderr,
                 "DSA: pattern %s (%lld of %lld layers F, %.0f%% of indexers removed), top-k %lld, indexer %lldx%lld; "
                 "indexer weights %.2f MiB, indexer key cache %lld B/token (all-F: %lld B/token)\n",
                 d.pattern.str().c_str(), (long long)n_full, (long long)L, 100.0 * (L - n_full) / L,
                 (long long)d.config.topk, (long long)d.config.n_heads, (long long)d.config.head_dim,
                 d.weight_bytes() / 1048576.0, (long long)d.key_cache_bytes_per_token(m.device()),
                 (long long)(L * dtype_row_bytes(indexer_key_dtype(m.device()), d.config.head_dim)));
  }
  llama->set_dsa(std::move(spec));
}

std::string resolve_model_path(const std::string& given) {
  if (!given.empty()) return given;
  const char* env = std::getenv("IC_MODEL");
  return env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IC_CHECK(in.good(), "cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  IC_CHECK(out.good(), "cannot write '{}'", path);
  out << text;
  out.flush();
  IC_CHECK(out.good(), "error writing '{}'", path);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

}  // namespace ic::cli
