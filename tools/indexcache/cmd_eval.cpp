// indexcache eval: quality of several model configurations (dense, DSA, IndexCache patterns) in
// one run over the same held-out text and the same passkey prompts (docs/EVAL.md): perplexity
// by context, passkey retrieval by length and depth, per-layer attention recall. The base model
// is loaded once; each configuration only swaps the DSA spec.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "indexcache/eval_config.h"
#include "indexcache/family_trainer.h"
#include "indexcache/text_data.h"
#include "indexcache/trainer.h"
#include "model/dsa_family/model.h"
#include "runtime/passkey.h"
#include "runtime/perplexity.h"

namespace ic::cli {

namespace {
struct EvalArgs {
  ModelOptions model;  // -m, -t, --device
  std::vector<std::string> configs, files;
  std::vector<int64_t> ctx{2048, 4096, 8192};
  int64_t max_tokens = 16384, topk = 0;
  std::vector<int64_t> passkey_lengths{1024, 2048, 4096, 8192};
  std::vector<double> passkey_depths{0, 25, 50, 75, 100};  // percent
  int64_t passkey_trials = 200;
  uint64_t seed = 1234;
  int64_t recall_ctx = 1024, recall_windows = 4;
  std::vector<std::string> sections{"ppl", "passkey", "recall"};
  std::string json, markdown;
};

bool has(const std::vector<std::string>& v, const char* s) { return std::find(v.begin(), v.end(), s) != v.end(); }

void progress_line(const std::string& what, int64_t done, int64_t total, double seconds, const std::string& extra) {
  const double tps = done / std::max(seconds, 1e-9);
  const double eta = (total - done) / std::max(tps, 1e-9);
  std::fprintf(stderr, "\r%s: %lld/%lld tokens, %.0f tok/s, ETA %.0f s%s   ", what.c_str(), (long long)done,
               (long long)total, tps, eta, extra.c_str());
}

// Held-out text: every .txt of the given files and folders in path order, EOS between documents,
// cut at max_tokens.
std::vector<std::vector<int32_t>> read_heldout(const Model& m, const std::vector<std::string>& paths, int64_t max_tokens) {
  std::vector<std::vector<int32_t>> docs;
  int64_t n = 0;
  for (const std::string& f : list_text_files(paths)) {
    if (max_tokens > 0 && n >= max_tokens) break;
    docs.push_back(m.tokenizer().encode(read_file(f), false));
    n += static_cast<int64_t>(docs.back().size());
  }
  return docs;
}

std::vector<int32_t> concat(const std::vector<std::vector<int32_t>>& docs, int32_t sep, int64_t max_tokens) {
  std::vector<int32_t> out;
  for (const auto& d : docs) {
    if (!out.empty() && sep >= 0) out.push_back(sep);
    out.insert(out.end(), d.begin(), d.end());
  }
  if (max_tokens > 0 && static_cast<int64_t>(out.size()) > max_tokens) out.resize(max_tokens);
  return out;
}

struct ConfigResult {
  nlohmann::json ppl = nlohmann::json::array();
  nlohmann::json passkey;
  nlohmann::json recall;
};

std::string pct(double d) { return fmt::format("{:g}%", d * 100.0); }

// One --config as the model runs it: a llama-family model swaps in the config's indexer file
// (spec; null: dense); a DSA checkpoint switches its own indexers to the config's pattern.
struct Configured {
  std::shared_ptr<const DsaSpec> spec;
  std::optional<LayerPattern> pattern;  // nullopt: dense
  int64_t topk = 0;
  explicit operator bool() const { return pattern.has_value(); }
};

Configured configure(const EvalConfig& c, Model& m, LlamaModel* llama, std::optional<int64_t> topk,
                     const std::optional<LayerPattern>& checkpoint_pattern) {
  const int64_t L = m.info().n_layers;
  Configured out;
  if (llama) {
    IC_CHECK(!c.checkpoint, "--config {}: '{}' names a DSA checkpoint's own indexers; {} is a llama-family model "
             "(give an indexer file)", c.name, c.spec, m.path());
    out.spec = c.load(L, llama->config().dim, topk);
    if (out.spec) out.pattern = out.spec->pattern, out.topk = out.spec->config.topk;
    return out;
  }
  IC_CHECK(c.checkpoint, "--config {}: a DSA checkpoint has no dense form and takes no indexer file; give "
           "NAME=model (its config.json pattern) or NAME=model@PATTERN", c.name);
  IC_CHECK(!topk, "eval: --topk is not supported for DSA checkpoints yet (their k is the checkpoint's)");
  out.pattern = c.pattern.resolve(L);
  if (!out.pattern) out.pattern = checkpoint_pattern;
  IC_CHECK(out.pattern, "--config {}: {} has no indexers", c.name, m.path());
  out.topk = m.topk();
  return out;
}

void apply(Model& m, LlamaModel* llama, const Configured& c) {
  if (llama)
    llama->set_dsa(c.spec);
  else
    m.set_pattern(*c.pattern);
}

void run(EvalArgs a) {
  for (const std::string& s : a.sections)
    IC_CHECK(s == "ppl" || s == "passkey" || s == "recall", "--sections: unknown section '{}' (ppl, passkey, recall)", s);
  const std::vector<EvalConfig> configs = parse_eval_configs(a.configs);
  IC_CHECK(!configs.empty(), "eval needs at least one --config NAME=SPEC (SPEC: dense or INDEXERS[@PATTERN])");
  const bool do_ppl = has(a.sections, "ppl"), do_pk = has(a.sections, "passkey");
  bool do_recall = has(a.sections, "recall");
  IC_CHECK(!(do_ppl || do_recall) || !a.files.empty(), "perplexity and recall need held-out text: -f FILES_OR_FOLDERS");

  auto model = load_model(a.model);
  auto* llama = dynamic_cast<LlamaModel*>(model.get());
  const ModelInfo& mc = model->info();
  const std::optional<LayerPattern> checkpoint_pattern =
      model->pattern() ? std::optional<LayerPattern>(*model->pattern()) : std::nullopt;
  // Everything that can fail on the arguments fails before any measurement starts.
  if (do_ppl)
    for (int64_t c : a.ctx)
      IC_CHECK(c >= 2 && c <= mc.context_max, "--ctx {} exceeds the model's trained context {} (or is below 2)", c,
               mc.context_max);
  if (do_pk)
    for (int64_t l : a.passkey_lengths)
      IC_CHECK(l > 0 && l <= mc.context_max, "--passkey-lengths {} exceeds the model's trained context {}", l, mc.context_max);
  PasskeyOptions pko;
  pko.lengths = a.passkey_lengths;
  pko.trials = a.passkey_trials;
  pko.seed = a.seed;
  pko.depths.clear();
  for (double d : a.passkey_depths) {
    IC_CHECK(d >= 0 && d <= 100, "--passkey-depths {} outside 0..100 (percent)", d);
    pko.depths.push_back(d / 100.0);
  }
  const std::optional<int64_t> topk = a.topk > 0 ? std::optional<int64_t>(a.topk) : std::nullopt;
  std::vector<Configured> specs;
  int64_t k_ref = a.topk;
  for (const EvalConfig& c : configs) {
    specs.push_back(configure(c, *model, llama, topk, checkpoint_pattern));
    if (specs.back() && k_ref == 0) k_ref = specs.back().topk;
    // A checkpoint's pattern whose F layers have no indexer tensors fails here, not after an hour.
    if (!llama) apply(*model, llama, specs.back());
  }
  auto* family = dynamic_cast<MlaMoeModel*>(model.get());
  IC_CHECK(!do_recall || llama || family, "eval: recall runs on llama-family and DSA-family models");

  std::vector<int32_t> heldout;
  std::optional<TextWindows> recall_windows;
  if (!a.files.empty() && (do_ppl || do_recall)) {
    const int64_t need = std::max(a.max_tokens, do_recall ? a.recall_ctx * a.recall_windows : 0);
    const auto docs = read_heldout(*model, a.files, need);
    heldout = concat(docs, model->tokenizer().eos_id(), a.max_tokens);
    std::fprintf(stderr, "held-out: %zu tokens from %s\n", heldout.size(), fmt::format("{}", fmt::join(a.files, ", ")).c_str());
    if (do_recall && a.recall_windows > 0) {
      TextDataOptions o;
      o.ctx = a.recall_ctx;
      o.separator = model->tokenizer().eos_id();
      o.max_windows = a.recall_windows;
      recall_windows = TextWindows::from_documents(docs, o);
    }
  }
  PasskeyBuilder builder([&](std::string_view t) { return model->tokenizer().encode(t, false); });

  std::vector<ConfigResult> results(configs.size());
  const auto t_start = std::chrono::steady_clock::now();
  for (size_t ci = 0; ci < configs.size(); ++ci) {
    const EvalConfig& cfg = configs[ci];
    apply(*model, llama, specs[ci]);  // caches are made after this, inside each measurement
    const std::string tag = fmt::format("[{}/{}] {}", ci + 1, configs.size(), cfg.name);
    std::fprintf(stderr, "%s: %s%s\n", tag.c_str(), cfg.spec.c_str(),
                 specs[ci] ? fmt::format(" (pattern {}, top-k {})", specs[ci].pattern->str(), specs[ci].topk).c_str() : "");
    const int64_t k = specs[ci] ? specs[ci].topk : k_ref;
    ConfigResult& res = results[ci];
    if (do_ppl)
      for (int64_t ctx : a.ctx) {
        const PerplexityResult r = perplexity(*model, heldout, ctx, [&](const PerplexityProgress& p) {
          progress_line(fmt::format("{} ppl@{}", tag, ctx), p.tokens_done, p.tokens_total, p.seconds,
                        fmt::format(", ppl so far {:.4f}", p.ppl_so_far));
        });
        std::fprintf(stderr, "\n");
        nlohmann::json j = {{"ctx", ctx}, {"tokens", r.n_tokens}, {"scored", r.n_scored}, {"windows", r.n_windows},
                            {"ppl", r.ppl}, {"nll", r.nll_sum / r.n_scored}, {"seconds", r.seconds}};
        if (k > 0) {
          j["past"] = k;
          j["ppl_past"] = r.ppl_from(k + 1);
        }
        res.ppl.push_back(j);
      }
    if (do_pk) {
      const PasskeyReport r = run_passkey(*model, builder, pko, [&](const PasskeyProgress& p) {
        progress_line(fmt::format("{} passkey", tag), p.tokens, p.tokens_total_estimate, p.seconds,
                      fmt::format(", trial {}/{}", p.trials_done, p.trials_total));
      });
      std::fprintf(stderr, "\n");
      nlohmann::json cells = nlohmann::json::array();
      for (const PasskeyCell& c : r.cells)
        cells.push_back({{"length", c.target_len}, {"depth", c.depth}, {"actual_depth", c.actual_depth},
                         {"prompt_tokens", c.prompt_len}, {"prefix_tokens", c.prefix_len}, {"trials", c.trials},
                         {"exact", c.exact}, {"accuracy", c.accuracy()}, {"mean_nll", c.mean_nll()}});
      res.passkey = {{"cells", cells}, {"accuracy", r.accuracy()}, {"mean_nll", r.mean_nll()}, {"tokens", r.tokens},
                     {"seconds", r.seconds}};
    }
    if (do_recall && specs[ci] && recall_windows) {
      // The teacher (trainer.h's evaluate; family_trainer.h's for the DSA family, the MLA
      // attention's head mean) runs the model dense and scores the config's indexers.
      if (llama) llama->set_dsa(nullptr);
      std::fprintf(stderr, "%s recall: %lld windows of %lld ...\n", tag.c_str(), (long long)recall_windows->n_windows(),
                   (long long)recall_windows->ctx());
      const EvalReport r = llama ? evaluate(*llama, *specs[ci].spec, *recall_windows)
                                 : evaluate_family(*family, checkpoint_indexers(*family, *specs[ci].pattern),
                                                   *recall_windows);
      nlohmann::json layers = nlohmann::json::array();
      for (const LayerEval& e : r.layers)
        layers.push_back({{"layer", e.layer}, {"source", e.source}, {"full", e.layer == e.source},
                          {"kl", e.stats.mean_kl()}, {"recall", e.stats.recall()}});
      res.recall = {{"windows", r.windows}, {"tokens", r.tokens}, {"mean_kl", r.mean_kl()}, {"recall", r.recall()},
                    {"seconds", r.seconds}, {"layers", layers}};
    }
  }
  if (llama) llama->set_dsa(nullptr);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  // Markdown.
  std::string md;
  if (do_ppl) {
    md += fmt::format("## Held-out perplexity ({} tokens; past k = window positions beyond {})\n\n| config | F layers |",
                      heldout.size(), k_ref);
    std::string rule = "|---|---|";
    for (int64_t c : a.ctx) {
      md += fmt::format(" ppl {} | past k {} |", c, c);
      rule += "---|---|";
    }
    md += "\n" + rule + "\n";
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      md += fmt::format("| {} | {} |", configs[ci].name,
                        specs[ci] ? fmt::format("{}/{}", specs[ci].pattern->n_full(), mc.n_layers) : std::string("dense"));
      for (const auto& j : results[ci].ppl)
        md += fmt::format(" {:.4f} | {} |", j["ppl"].get<double>(),
                          j.contains("ppl_past") ? fmt::format("{:.4f}", j["ppl_past"].get<double>()) : std::string("-"));
      md += "\n";
    }
    md += "\n";
  }
  if (do_pk) {
    md += fmt::format("## Passkey retrieval ({} trials per cell, seed {}): exact-match accuracy / mean key NLL (nats)\n\n",
                      a.passkey_trials, a.seed);
    md += "| config | accuracy | mean NLL |";
    std::string rule = "|---|---|---|";
    for (int64_t l : a.passkey_lengths) md += fmt::format(" acc {} |", l), rule += "---|";
    md += "\n" + rule + "\n";
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const auto& p = results[ci].passkey;
      md += fmt::format("| {} | {:.3f} | {:.3f} |", configs[ci].name, p["accuracy"].get<double>(), p["mean_nll"].get<double>());
      for (int64_t l : a.passkey_lengths) {
        int64_t t = 0, e = 0;
        for (const auto& c : p["cells"])
          if (c["length"].get<int64_t>() == l) t += c["trials"].get<int64_t>(), e += c["exact"].get<int64_t>();
        md += fmt::format(" {:.3f} |", t ? static_cast<double>(e) / t : 0.0);
      }
      md += "\n";
    }
    md += "\n";
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      md += fmt::format("### Passkey, {}: accuracy / mean NLL by length (rows) and depth (columns)\n\n| length |",
                        configs[ci].name);
      std::string rule = "|---|";
      for (double d : pko.depths) md += fmt::format(" {} |", pct(d)), rule += "---|";
      md += " all |\n" + rule + "---|\n";
      const auto& cells = results[ci].passkey["cells"];
      std::vector<int64_t> dt(pko.depths.size(), 0), de(pko.depths.size(), 0);
      std::vector<double> dn(pko.depths.size(), 0.0);
      for (int64_t l : a.passkey_lengths) {
        md += fmt::format("| {} |", l);
        int64_t t = 0, e = 0;
        double n = 0;
        for (size_t di = 0; di < pko.depths.size(); ++di)
          for (const auto& c : cells)
            if (c["length"].get<int64_t>() == l && c["depth"].get<double>() == pko.depths[di]) {
              const int64_t ct = c["trials"], ce = c["exact"];
              const double cn = c["mean_nll"].get<double>() * ct;
              md += fmt::format(" {:.2f} / {:.2f} |", c["accuracy"].get<double>(), c["mean_nll"].get<double>());
              t += ct, e += ce, n += cn, dt[di] += ct, de[di] += ce, dn[di] += cn;
            }
        md += fmt::format(" {:.2f} / {:.2f} |\n", t ? double(e) / t : 0.0, t ? n / t : 0.0);
      }
      md += "| all |";
      int64_t t = 0, e = 0;
      double n = 0;
      for (size_t di = 0; di < pko.depths.size(); ++di) {
        md += fmt::format(" {:.2f} / {:.2f} |", dt[di] ? double(de[di]) / dt[di] : 0.0, dt[di] ? dn[di] / dt[di] : 0.0);
        t += dt[di], e += de[di], n += dn[di];
      }
      md += fmt::format(" {:.2f} / {:.2f} |\n\n", t ? double(e) / t : 0.0, t ? n / t : 0.0);
    }
  }
  if (do_recall && recall_windows) {
    md += fmt::format("## Per-layer attention recall (share of the layer's attention on its source indexer's top-k; "
                      "{} windows of {}; S layers marked s)\n\n| layer |",
                      recall_windows->n_windows(), recall_windows->ctx());
    std::string rule = "|---|";
    for (size_t ci = 0; ci < configs.size(); ++ci)
      if (specs[ci]) md += fmt::format(" {} |", configs[ci].name), rule += "---|";
    md += "\n" + rule + "\n";
    for (int64_t l = 0; l < mc.n_layers; ++l) {
      md += fmt::format("| {} |", l);
      for (size_t ci = 0; ci < configs.size(); ++ci)
        if (specs[ci]) {
          const auto& e = results[ci].recall["layers"][l];
          md += fmt::format(" {:.4f}{} |", e["recall"].get<double>(), e["full"].get<bool>() ? "" : " s");
        }
      md += "\n";
    }
    md += "| mean |";
    for (size_t ci = 0; ci < configs.size(); ++ci)
      if (specs[ci]) md += fmt::format(" {:.4f} |", results[ci].recall["recall"].get<double>());
    md += "\n\n";
  }
  std::printf("%s", md.c_str());
  if (!a.markdown.empty()) {
    std::ofstream out(a.markdown);
    IC_CHECK(out.good(), "cannot write '{}'", a.markdown);
    out << md;
  }
  if (!a.json.empty()) {
    nlohmann::json cj = nlohmann::json::array();
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      nlohmann::json c = {{"name", configs[ci].name}, {"spec", configs[ci].spec}, {"dense", configs[ci].dense}};
      if (specs[ci]) {
        c["indexers"] = configs[ci].indexers;
        c["pattern"] = specs[ci].pattern->str();
        c["n_full"] = specs[ci].pattern->n_full();
        c["topk"] = specs[ci].topk;
      }
      if (do_ppl) c["perplexity"] = results[ci].ppl;
      if (do_pk) c["passkey"] = results[ci].passkey;
      if (!results[ci].recall.is_null()) c["recall"] = results[ci].recall;
      cj.push_back(c);
    }
    const nlohmann::json j = {
        {"model", resolve_model_path(a.model.model)},
        {"n_layers", mc.n_layers},
        {"heldout", {{"files", a.files}, {"tokens", heldout.size()}, {"max_tokens", a.max_tokens}}},
        {"ctx", a.ctx},
        {"passkey_options",
         {{"lengths", a.passkey_lengths}, {"depths_percent", a.passkey_depths}, {"trials", a.passkey_trials}, {"seed", a.seed}}},
        {"recall_options", {{"ctx", a.recall_ctx}, {"windows", a.recall_windows}}},
        {"sections", a.sections},
        {"seconds", total_s},
        {"configs", cj}};
    std::ofstream out(a.json);
    IC_CHECK(out.good(), "cannot write '{}'", a.json);
    out << j.dump(1) << "\n";
  }
}
}  // namespace

void register_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity, passkey retrieval and attention recall of several configurations");
  cmd->add_option("-m,--model", a->model.model, "GGUF model file (default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads (default: all cores)");
  cmd->add_option("--device", a->model.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  add_parallel_options(cmd, a->model);
  cmd->add_option("--config", a->configs,
                  "NAME=SPEC, repeatable; SPEC: dense | INDEXERS.safetensors[@FSSF...|@freq=N[,offset=M]|"
                  "@search=FILE.json:KEY]")->required();
  cmd->add_option("--topk", a->topk, "Keys each query attends to in every DSA configuration (default: each file's)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-f,--file", a->files, "Held-out text files or folders (every .txt, in path order)");
  cmd->add_option("--ctx", a->ctx, "Perplexity window lengths (default 2048,4096,8192)")->delimiter(',');
  cmd->add_option("--max-tokens", a->max_tokens, "Held-out tokens for perplexity (default 16384; 0: all)");
  cmd->add_option("--passkey-lengths", a->passkey_lengths, "Passkey prompt lengths in tokens (default 1024,2048,4096,8192)")
      ->delimiter(',');
  cmd->add_option("--passkey-depths", a->passkey_depths, "Needle depths in percent (default 0,25,50,75,100)")->delimiter(',');
  cmd->add_option("--passkey-trials", a->passkey_trials, "Trials per (length, depth) cell (default 200)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->seed, "Seed of the passkey keys (default 1234)");
  cmd->add_option("--recall-ctx", a->recall_ctx, "Window length for attention recall (default 1024)")->check(CLI::PositiveNumber);
  cmd->add_option("--recall-windows", a->recall_windows, "Held-out windows for attention recall (default 4; 0: skip)");
  cmd->add_option("--sections", a->sections, "What to measure (default ppl,passkey,recall)")->delimiter(',');
  cmd->add_option("--json", a->json, "Write everything, with the exact configuration, to this JSON file");
  cmd->add_option("--markdown", a->markdown, "Also write the markdown tables to this file");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
