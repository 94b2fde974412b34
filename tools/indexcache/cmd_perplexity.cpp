// indexcache perplexity: perplexity of a text file over non-overlapping windows.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "runtime/perplexity.h"

namespace ic::cli {

namespace {
struct PerplexityArgs {
  ModelOptions model;
  std::string file;
  int64_t ctx = 2048;
  int64_t max_tokens = 0;
  int64_t past = 0;
  bool json = false;
};

void run(const PerplexityArgs& a) {
  auto model = load_model(a.model, a.json);
  std::vector<int32_t> ids = model->tokenizer().encode(read_file(a.file), false);
  if (a.max_tokens > 0 && static_cast<int64_t>(ids.size()) > a.max_tokens) ids.resize(a.max_tokens);
  if (!a.json) std::fprintf(stderr, "%s: %zu tokens, windows of %lld\n", a.file.c_str(), ids.size(), (long long)a.ctx);
  const PerplexityResult r = perplexity(*model, ids, a.ctx, [&](const PerplexityProgress& p) {
    const double tps = p.tokens_done / std::max(p.seconds, 1e-9);
    const double eta = (p.tokens_total - p.tokens_done) / std::max(tps, 1e-9);
    std::fprintf(stderr, "\r[%lld/%lld] %lld/%lld tokens, %.0f tokens/s, ETA %.0f s, ppl so far %.4f   ",
                 (long long)p.window, (long long)p.n_windows, (long long)p.tokens_done,
                 (long long)p.tokens_total, tps, eta, p.ppl_so_far);
    if (p.window == p.n_windows) std::fprintf(stderr, "\n");
  });
  const double tps = r.n_tokens / std::max(r.seconds, 1e-9);
  // With DSA, also the perplexity of the tokens past the top-k, where sparse attention drops keys.
  const int64_t k = a.past > 0 ? a.past : model->topk();
  const double ppl_past_k = k > 0 ? r.ppl_from(k + 1) : 0.0;
  if (a.json) {
    nlohmann::json j = {{"file", a.file},     {"ctx", a.ctx},         {"tokens", r.n_tokens},
                        {"scored", r.n_scored}, {"windows", r.n_windows}, {"nll", r.nll_sum / r.n_scored},
                        {"nll_sum", r.nll_sum}, {"ppl", r.ppl},         {"seconds", r.seconds},
                        {"tokens_per_s", tps}};
    if (k > 0) {
      j["past"] = k;
      j["ppl_past"] = ppl_past_k;
    }
    if (model->pattern()) {
      j["topk"] = model->topk();
      j["pattern"] = model->pattern()->str();
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("perplexity %.4f | nll %.5f | %lld tokens (%lld scored, %lld windows of %lld) | %.1f tokens/s\n", r.ppl,
              r.nll_sum / r.n_scored, (long long)r.n_tokens, (long long)r.n_scored, (long long)r.n_windows,
              (long long)a.ctx, tps);
  if (k > 0) std::printf("perplexity past window position %lld: %.4f\n", (long long)k, ppl_past_k);
}
}  // namespace

void register_perplexity(CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a text file");
  add_model_options(cmd, a->model);
  cmd->add_option("-f,--file", a->file, "Text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-c,--ctx-size", a->ctx, "Window length in tokens")->check(CLI::PositiveNumber);
  cmd->add_option("--max-tokens", a->max_tokens, "Use at most this many tokens of the file (0: all)");
  cmd->add_option("--past", a->past, "Also report the perplexity of tokens past this window position "
                  "(default with --indexers: the top-k, where sparse attention starts dropping keys)");
  cmd->add_flag("--json", a->json, "Print one JSON object (ppl, nll, tokens, ...)");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
