// indexcache search: the training-free greedy search for an IndexCache layer pattern
// (the paper's Algorithm 1; docs/SEARCH.md).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "indexcache/search_report.h"

#include "common.h"
#include "core/error.h"
#include "indexcache/pattern_export.h"
#include "indexcache/search.h"
#include "indexcache/text_data.h"

namespace ic::cli {

namespace {
struct SearchArgs {
  ModelOptions model;
  std::vector<std::string> files;
  int64_t ctx = 1024, windows = 4, blocks = 1, max_tokens = 0;
  bool random_tokens = false;  // --random-tokens: windows of random ids (cost runs on --random-weights models)
  uint64_t seed = 0;
  std::string keep = "1/8", json, svg;
  std::string export_for;  // --export: engines to print each nested pattern for
  bool lazy = false, quiet = false;
};

// "1/D" -> ceil(N / D); "COUNT" -> COUNT.
int64_t parse_keep(const std::string& s, int64_t n_layers) {
  try {
    size_t used = 0;
    if (s.rfind("1/", 0) == 0) {
      const int64_t d = std::stoll(s.substr(2), &used);
      IC_CHECK(used == s.size() - 2 && d >= 1, "");
      return keep_count(n_layers, d);
    }
    const int64_t k = std::stoll(s, &used);
    IC_CHECK(used == s.size(), "");
    return k;
  } catch (const std::exception&) {
    fail("--keep '{}': expected a fraction 1/D (1/2, 1/4, 1/8) or a count of F layers", s);
  }
}

// The model with an indexer on every layer: a DSA checkpoint's own, or a llama-family model with an
// all-F indexer file. `llama` is set for the latter (its dense form is the search's reference point).
std::unique_ptr<Model> load_all_full(const SearchArgs& a, LlamaModel*& llama) {
  llama = nullptr;
  if (!a.model.random_weights.empty() || is_hf_folder(resolve_model_path(a.model.model))) {
    IC_CHECK(a.model.indexers.empty(), "search -m FOLDER: a DSA checkpoint carries its own indexers; --indexers is for "
             "llama-family models");
    IC_CHECK(a.model.topk == 0, "search: --topk is not supported for DSA checkpoints yet (their k is the checkpoint's)");
    ModelOptions all_f = a.model;
    all_f.index_freq = 1;  // every layer F: every indexer is loaded
    return load_model(all_f, a.quiet);
  }
  IC_CHECK(!a.model.indexers.empty(), "search needs --indexers FILE with an indexer on every layer (all F)");
  ModelOptions dense = a.model;
  dense.indexers.clear();
  dense.topk = 0;
  auto m = load_llama(dense, "search", a.quiet);
  const int64_t N = m->info().n_layers;
  m->set_dsa(std::make_shared<DsaSpec>(load_indexers(a.model.indexers, N, m->config().dim, LayerPattern::all_full(N),
                                                     a.model.topk > 0 ? std::optional<int64_t>(a.model.topk)
                                                                      : std::nullopt)));
  llama = m.get();
  return m;
}

// The calibration windows from -f: a seeded choice of windows of the tokenized text.
void calibration_windows(const SearchArgs& a, const Model& model, std::vector<std::vector<int32_t>>& windows,
                         std::vector<int64_t>& chosen, std::string& fingerprint) {
  const Tokenizer& tok = model.tokenizer();
  TextDataOptions dopt;
  dopt.ctx = a.ctx;
  dopt.separator = tok.eos_id();
  dopt.max_tokens = a.max_tokens;
  const TextWindows data = TextWindows::load(a.files, [&](std::string_view t) { return tok.encode(t, false); }, dopt);
  IC_CHECK(a.windows >= 1 && a.windows <= data.n_windows(), "--windows {}: the calibration text gives {} windows of {}",
           a.windows, data.n_windows(), a.ctx);
  // A seeded choice among all windows, so a few windows still mix the corpus's parts.
  const std::vector<int64_t> perm = window_permutation(data.n_windows(), a.seed, 0);
  for (int64_t i = 0; i < a.windows; ++i) {
    const auto w = data.window(perm[i]);
    windows.emplace_back(w.begin(), w.end());
    chosen.push_back(perm[i]);
  }
  if (!a.quiet)
    std::fprintf(stderr, "calibration: %zu files, %lld tokens, %lld windows of %lld (fingerprint %s); using %lld "
                 "(seed %llu)\n", data.files().size(), (long long)data.n_tokens(), (long long)data.n_windows(),
                 (long long)a.ctx, data.fingerprint().c_str(), (long long)a.windows, (unsigned long long)a.seed);
  fingerprint = data.fingerprint();
}

void run(SearchArgs a) {
  // Checked before the search: a misspelt engine must not cost a search.
  const std::vector<Engine> engines = a.export_for.empty() ? std::vector<Engine>{} : parse_engines(a.export_for);
  IC_CHECK(a.model.pattern.empty() && a.model.index_freq == 0,
           "search starts from indexers on every layer; --pattern and --index-freq do not apply");
  LlamaModel* llama = nullptr;
  const std::unique_ptr<Model> model = load_all_full(a, llama);
  const ModelInfo& mc = model->info();
  const int64_t N = mc.n_layers;
  IC_CHECK(a.ctx >= 2 && a.ctx <= mc.context_max, "--ctx {} must be in [2, {}] (the model's context limit)", a.ctx,
           mc.context_max);
  SearchConfig cfg;
  cfg.keep = parse_keep(a.keep, N);
  cfg.lazy = a.lazy;
  cfg.blocks = a.blocks;

  std::vector<std::vector<int32_t>> windows;
  std::vector<int64_t> chosen;
  std::string fingerprint = fmt::format("random-tokens:{}", a.seed);
  if (a.random_tokens) {
    // Ids uniform over the vocabulary from the seed: the search's cost does not depend on them
    // (its answer does; a random-weight model has no meaningful one).
    IC_CHECK(a.files.empty(), "give -f FILES or --random-tokens, not both");
    IC_CHECK(a.windows >= 1, "--windows {} must be positive", a.windows);
    uint64_t z = a.seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (int64_t w = 0; w < a.windows; ++w) {
      std::vector<int32_t> ids(static_cast<size_t>(a.ctx));
      for (int32_t& id : ids) {
        z += 0x9E3779B97F4A7C15ull;
        uint64_t x = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        id = static_cast<int32_t>((x ^ (x >> 31)) % static_cast<uint64_t>(mc.vocab));
      }
      windows.push_back(std::move(ids));
      chosen.push_back(w);
    }
    if (!a.quiet)
      std::fprintf(stderr, "calibration: %lld windows of %lld random token ids (seed %llu): for timing only\n",
                   (long long)a.windows, (long long)a.ctx, (unsigned long long)a.seed);
  } else {
    IC_CHECK(!a.files.empty(), "search needs calibration text (-f FILES), or --random-tokens for a cost run");
    calibration_windows(a, *model, windows, chosen, fingerprint);
  }

  if (!a.quiet)
    std::fprintf(stderr, "search: %lld layers, keep %lld F (%s), top-k %lld, %s%s, %d threads\n", (long long)N,
                 (long long)cfg.keep, a.keep.c_str(), (long long)model->topk(),
                 cfg.lazy ? "lazy greedy" : "exact greedy",
                 cfg.blocks > 1 ? fmt::format(", {} blocks", cfg.blocks).c_str() : "", omp_get_max_threads());
  const SearchResult r = greedy_search(*model, windows, cfg, [&](const SearchProgress& p) {
    if (a.quiet) return;
    const double rate = p.layer_evals / std::max(p.seconds, 1e-9);
    const double eta = (p.layer_evals_estimate - p.layer_evals) / std::max(rate, 1e-9);
    std::fprintf(stderr, "\r[flip %lld/%lld] candidate %lld/%lld, best loss %.5f | %lld layer-evals, %.1f/s, ETA %.0f s   ",
                 (long long)p.step + 1, (long long)p.total_steps, (long long)p.candidate, (long long)p.n_candidates,
                 p.best_loss, (long long)p.layer_evals, rate, std::max(0.0, eta));
  });
  if (!a.quiet) std::fprintf(stderr, "\n");
  // The reference point: the dense model on the same windows (a llama-family model without its
  // indexers; a DSA checkpoint has no dense form).
  std::optional<double> dense_loss;
  if (llama) {
    const auto all_f = std::make_shared<DsaSpec>(*llama->dsa());
    llama->set_dsa(nullptr);
    dense_loss = mean_window_nll(*model, windows);
    llama->set_dsa(all_f);
  }
  if (dense_loss)
    std::printf("dense loss %.5f | all-F loss %.5f (%+.5f)\n", *dense_loss, r.all_f_loss, r.all_f_loss - *dense_loss);
  else
    std::printf("all-F loss %.5f (a DSA checkpoint: no dense reference)\n", r.all_f_loss);
  std::printf("step | layer | loss     | vs all-F | F  | pattern\n");
  for (const SearchStep& s : r.trajectory)
    std::printf("%4lld | %5lld | %.5f | %+.5f | %2lld | %s\n", (long long)s.step, (long long)s.layer, s.loss,
                s.loss - r.all_f_loss, (long long)s.pattern.n_full(), s.pattern.str().c_str());
  nlohmann::json patterns = nlohmann::json::object();
  for (int64_t d : {2, 4, 8}) {
    const int64_t k = keep_count(N, d);
    if (k < cfg.keep) continue;
    const LayerPattern p = r.pattern_with(k);
    const std::string name = "1/" + std::to_string(d);
    patterns[name] = p.str();
    std::printf("%-4s (%2lld F): %s\n", name.c_str(), (long long)k, p.str().c_str());
  }
  if (!patterns.contains(a.keep)) patterns[a.keep] = r.pattern_with(cfg.keep).str();
  const SearchCost& c = r.cost;
  std::printf("cost: %lld candidates; %lld layer evaluations + %lld output-head passes (one layer or head over one "
              "window) vs %lld layer evaluations + %lld heads for the same candidates as full passes (%.2fx fewer "
              "layer evaluations); %.1f s, %.1f layer-evals/s; cache %.1f MiB\n",
              (long long)c.candidates, (long long)c.layer_evals, (long long)c.head_evals,
              (long long)c.naive_layer_evals, (long long)(c.naive_passes * a.windows),
              static_cast<double>(c.naive_layer_evals) / std::max<int64_t>(1, c.layer_evals), c.seconds,
              c.layer_evals / std::max(c.seconds, 1e-9), c.cache_bytes / 1048576.0);
  // Weight multiply-adds per token of one llama layer (q, k, v, o and the SwiGLU FFN) and of the
  // output head weigh the counts above into an estimate of the work saved. Other families have no
  // such count yet (an MoE layer's active weights are not its stored ones), so none is printed.
  std::optional<double> head_layers, work_ratio;
  if (llama) {
    const LlamaConfig& lc = llama->config();
    const double kv_dim = static_cast<double>(lc.n_kv_heads * lc.head_dim);
    const double layer_macs = lc.dim * (2.0 * lc.dim + 2.0 * kv_dim) + 3.0 * lc.dim * lc.ffn_dim;
    head_layers = static_cast<double>(mc.vocab) * mc.dim / layer_macs;
    const double work = c.layer_evals + *head_layers * c.head_evals;
    const double naive_work = c.naive_layer_evals + *head_layers * c.naive_passes * a.windows;
    work_ratio = naive_work / std::max(work, 1.0);
    std::printf("work (weight MACs, the output head counted as %.1f layers): %.2fx less than full passes\n",
                *head_layers, *work_ratio);
  }
  if (c.refresh_mismatches > 0)
    std::fprintf(stderr, "warning: %lld committed losses differed from their candidate losses (non-deterministic ops?)\n",
                 (long long)c.refresh_mismatches);

  for (const auto& [name, letters] : patterns.items())  // --export: each nested pattern per engine
    for (Engine e : engines) {
      const PatternExport x = export_pattern(LayerPattern::parse(letters.get<std::string>(), N), e);
      std::printf("\n%s: %s", name.c_str(), export_report(x).c_str());
    }

  if (a.json.empty() && a.svg.empty()) return;
  nlohmann::json traj = nlohmann::json::array();
  for (const SearchStep& s : r.trajectory) {
    nlohmann::json cands = nlohmann::json::object();
    for (const auto& [layer, loss] : s.candidates) cands[std::to_string(layer)] = loss;
    traj.push_back({{"step", s.step}, {"layer", s.layer}, {"loss", s.loss}, {"candidate_loss", s.candidate_loss},
                    {"n_full", s.pattern.n_full()}, {"pattern", s.pattern.str()}, {"evaluated", s.evaluated},
                    {"candidates", cands}});
  }
  const nlohmann::json j = {
      {"patterns", patterns},
      {"trajectory", traj},
      {"dense_loss", dense_loss ? nlohmann::json(*dense_loss) : nlohmann::json(nullptr)},
      {"all_f_loss", r.all_f_loss},
      {"cost",
       {{"candidates", c.candidates}, {"layer_evals", c.layer_evals}, {"head_evals", c.head_evals},
        {"naive_passes", c.naive_passes}, {"naive_layer_evals", c.naive_layer_evals},
        {"refresh_mismatches", c.refresh_mismatches}, {"seconds", c.seconds}, {"cache_bytes", c.cache_bytes},
        {"head_in_layers", head_layers ? nlohmann::json(*head_layers) : nlohmann::json(nullptr)},
        {"work_ratio", work_ratio ? nlohmann::json(*work_ratio) : nlohmann::json(nullptr)}}},
      {"config",
       {{"model", model->path()}, {"indexers", a.model.indexers}, {"topk", model->topk()}, {"n_layers", N},
        {"keep", cfg.keep}, {"keep_arg", a.keep}, {"lazy", cfg.lazy}, {"blocks", cfg.blocks}, {"ctx", a.ctx},
        {"windows", a.windows}, {"window_ids", chosen}, {"seed", a.seed}, {"files", a.files},
        {"data_fingerprint", fingerprint}, {"threads", omp_get_max_threads()}}}};
  if (!a.json.empty()) write_text(a.json, j.dump(2) + "\n");
  if (!a.svg.empty()) write_text(a.svg, search_loss_curve_svg(j));
}
}  // namespace

void register_search(CLI::App& app) {
  // Draw a finished search's loss curve again from its JSON (e.g. one made on another machine).
  auto plot = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* pc = app.add_subcommand("search-plot", "Draw the loss curve of a search's JSON as an SVG");
  pc->add_option("json", plot->first, "JSON written by indexcache search --json")->required()->check(CLI::ExistingFile);
  pc->add_option("-o,--output", plot->second, "SVG file to write")->required();
  pc->callback([plot] {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(plot->first));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON ({})", plot->first, e.what());
    }
    write_text(plot->second, search_loss_curve_svg(j, plot->first));
    std::fprintf(stderr, "wrote %s\n", plot->second.c_str());
  });

  auto a = std::make_shared<SearchArgs>();
  CLI::App* cmd = app.add_subcommand("search", "Greedy search for an IndexCache layer pattern (training-free)");
  add_model_options(cmd, a->model);
  cmd->add_option("-f,--file", a->files, "Calibration text: files or folders (.txt, searched recursively)");
  cmd->add_flag("--random-tokens", a->random_tokens,
                "Calibration windows of random token ids instead of -f (cost runs on --random-weights models)");
  cmd->add_option("-c,--ctx", a->ctx, "Tokens per calibration window");
  cmd->add_option("--windows", a->windows, "Calibration windows (a seeded choice among all)");
  cmd->add_option("--seed", a->seed, "Seed of the window choice");
  cmd->add_option("--max-tokens", a->max_tokens, "Read calibration files only until this many tokens (0: all)");
  cmd->add_option("--keep", a->keep, "Stop at this retention: 1/2, 1/4, 1/8 (of the layers, rounded up) or a count "
                  "of F layers; patterns at 1/2, 1/4, 1/8 on the way are reported");
  cmd->add_flag("--lazy", a->lazy, "Lazy greedy: fewer evaluations, may change the answer");
  cmd->add_option("--blocks", a->blocks, "P pipeline blocks whose first layers stay F; one flip per block per step "
                  "(may change the answer)")->check(CLI::PositiveNumber);
  cmd->add_option("--json", a->json, "Write patterns, trajectory and cost to this JSON file");
  cmd->add_option("--svg", a->svg, "Draw the loss curve (loss vs F layers kept) to this SVG file");
  cmd->add_option("--export", a->export_for, "Also print each pattern found in the form vllm, sglang, trtllm or hf "
                  "takes (or all; see indexcache pattern export)");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress on stderr");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
