// indexcache overlap: how much the layers' own indexers agree, as the mean Jaccard overlap of
// their top-k sets for every pair of layers, with a heatmap (docs/EVAL.md).
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "indexcache/eval_config.h"
#include "indexcache/overlap.h"
#include "io/svg.h"

namespace ic::cli {

namespace {
struct OverlapArgs {
  ModelOptions model;  // -m, -t, --device
  std::string indexers, file, pattern, json, svg;
  int64_t ctx = 2048, topk = 0, offset = 0;
};

void run(const OverlapArgs& a) {
  // Every layer runs its own indexer, whatever pattern the indexers were trained for: a DSA
  // checkpoint loads all of its indexers, a llama-family model takes an all-F indexer file.
  std::unique_ptr<Model> model;
  if (is_hf_folder(resolve_model_path(a.model.model))) {
    IC_CHECK(a.indexers.empty(), "overlap -m FOLDER: a DSA checkpoint carries its own indexers; --indexers is for "
             "llama-family models");
    IC_CHECK(a.topk == 0, "overlap: --topk is not supported for DSA checkpoints yet (their k is the checkpoint's)");
    ModelOptions all_f = a.model;
    all_f.index_freq = 1;  // every layer F
    model = load_model(all_f);
  } else {
    IC_CHECK(!a.indexers.empty(), "overlap: a llama-family model needs --indexers ALLF.safetensors");
    auto llama = load_llama(a.model, "overlap");
    const int64_t L = llama->info().n_layers;
    llama->set_dsa(std::make_shared<DsaSpec>(load_indexers(a.indexers, L, llama->config().dim, LayerPattern::all_full(L),
                                                           a.topk > 0 ? std::optional<int64_t>(a.topk) : std::nullopt)));
    model = std::move(llama);
  }
  const ModelInfo& mc = model->info();
  IC_CHECK(a.ctx >= 2 && a.ctx <= mc.context_max, "--ctx {} exceeds the model's trained context {} (or is below 2)", a.ctx,
           mc.context_max);
  IC_CHECK(model->pattern(), "overlap: {} has no indexers (a dense model selects nothing)", model->path());
  const int64_t k = model->topk();
  std::optional<LayerPattern> marked;
  if (!a.pattern.empty()) {
    marked = PatternChoice::parse(a.pattern).resolve(mc.n_layers);
    IC_CHECK(marked, "--pattern: give FSSF..., freq=N[,offset=M] or search=FILE.json:KEY");
  }

  std::vector<int32_t> ids = model->tokenizer().encode(read_file(a.file), false);
  IC_CHECK(static_cast<int64_t>(ids.size()) > a.offset + k,
           "{}: {} tokens, but overlap needs more than offset {} + top-k {} (a full top-k set at position >= k)", a.file,
           ids.size(), a.offset, k);
  ids.erase(ids.begin(), ids.begin() + a.offset);
  if (static_cast<int64_t>(ids.size()) > a.ctx) ids.resize(a.ctx);
  std::fprintf(stderr, "overlap: %zu tokens of %s, top-k %lld, %lld layers\n", ids.size(), a.file.c_str(), (long long)k,
               (long long)mc.n_layers);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Tensor> topk = capture_topk(*model, ids);
  const double fwd_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "forward: %zu tokens in %.2f s (%.0f tok/s)\n", ids.size(), fwd_s, ids.size() / std::max(fwd_s, 1e-9));
  // Query t has t + 1 candidate keys: before position k the set is the whole causal context, the
  // same for every layer (position k - 1 included), so only positions >= k, where each layer
  // really chooses k of more than k keys, are averaged.
  const OverlapMatrix m = layer_overlap(topk, k);
  const int64_t L = m.n_layers;

  double off_sum = 0;
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < L; ++j)
      if (i != j) off_sum += m.at(i, j);
  const double off_mean = L > 1 ? off_sum / (L * (L - 1)) : 1.0;
  std::printf("mean Jaccard over %lld query positions (>= %lld), %lld layer pairs: %.4f; adjacent layers:", (long long)m.rows,
              (long long)m.min_position, (long long)(L * (L - 1) / 2), off_mean);
  for (int64_t l = 0; l + 1 < L; ++l) std::printf(" %.2f", m.at(l, l + 1));
  std::printf("\n");

  if (!a.json.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t i = 0; i < L; ++i) {
      std::vector<double> r(m.jaccard.begin() + i * L, m.jaccard.begin() + (i + 1) * L);
      rows.push_back(r);
    }
    nlohmann::json j = {{"model", resolve_model_path(a.model.model)}, {"indexers", a.indexers}, {"file", a.file},
                        {"offset", a.offset}, {"tokens", ids.size()}, {"topk", k}, {"n_layers", L},
                        {"min_position", m.min_position}, {"rows", m.rows}, {"mean_offdiagonal", off_mean},
                        {"jaccard", rows}};
    if (marked) j["pattern"] = marked->str();
    std::ofstream out(a.json);
    IC_CHECK(out.good(), "cannot write '{}'", a.json);
    out << j.dump(1) << "\n";
  }
  if (!a.svg.empty()) {
    svg::HeatmapOptions o;
    o.title = fmt::format("Top-{} Jaccard overlap between layers ({} query positions >= {})", k, m.rows, m.min_position);
    o.value_label = "mean Jaccard";
    if (marked) {
      for (int64_t l = 0; l < L; ++l) o.marked.push_back(marked->is_full(l));
      o.marked_legend = fmt::format("F layer of {} ({} of {})", marked->str(), marked->n_full(), L);
    }
    std::ofstream out(a.svg);
    IC_CHECK(out.good(), "cannot write '{}'", a.svg);
    out << svg::heatmap(m.jaccard, L, L, o);
  }
}
}  // namespace

void register_overlap(CLI::App& app) {
  auto a = std::make_shared<OverlapArgs>();
  CLI::App* cmd = app.add_subcommand("overlap", "Jaccard overlap of the layers' top-k sets (JSON and SVG heatmap)");
  cmd->add_option("-m,--model", a->model.model, "GGUF model file or DSA checkpoint folder (default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads (default: all cores)");
  cmd->add_option("--device", a->model.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--indexers", a->indexers, "Indexer file with an indexer on every layer (all-F; llama-family models)");
  cmd->add_option("-f,--file", a->file, "Text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--ctx", a->ctx, "Tokens of the file to run (default 2048)")->check(CLI::PositiveNumber);
  cmd->add_option("--offset", a->offset, "Skip this many tokens of the file first");
  cmd->add_option("--topk", a->topk, "k of the top-k sets (default: the file's)")->check(CLI::PositiveNumber);
  cmd->add_option("--pattern", a->pattern, "Mark this pattern's F layers: FSSF..., freq=N[,offset=M] or search=FILE.json:KEY");
  cmd->add_option("--json", a->json, "Write the matrix to this JSON file");
  cmd->add_option("--svg", a->svg, "Write a heatmap to this SVG file");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
