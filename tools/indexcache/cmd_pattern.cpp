// indexcache pattern: a layer pattern in the form each serving engine takes (export), and the
// pattern a checkpoint's config.json gives under each engine's rule (show); docs/SEARCH.md.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "indexcache/eval_config.h"
#include "indexcache/pattern_export.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"

namespace ic::cli {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;  // keys in the order written

struct ExportArgs {
  std::string pattern, engines = "all";
  int64_t n_layers = 0;  // 0: from the pattern itself
  bool json = false;
};

struct ShowArgs {
  std::string model, rule = "all";
  bool json = false;
};

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Letters in a pattern as LayerPattern::parse counts them ('_' and ' ' are separators).
int64_t letter_count(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += c != '_' && c != ' ';
  return n;
}

// The layer count a pattern argument implies: its letters, or the length of the search file's
// pattern; a schedule has none and needs --n-layers.
int64_t implied_layers(const PatternChoice& c, const std::string& arg) {
  if (c.kind == PatternChoice::Kind::kLetters) return letter_count(c.letters);
  IC_CHECK(c.kind == PatternChoice::Kind::kSearch,
           "pattern '{}' is a schedule and does not say how many layers the model has: give --n-layers N", arg);
  json j;
  try {
    j = json::parse(read_file(c.search_file));
  } catch (const json::exception& e) {
    fail("search result '{}' is not JSON: {}", c.search_file, e.what());
  }
  const json* p = j.is_object() && j.contains("patterns") && j["patterns"].is_object() &&
                          j["patterns"].contains(c.search_key) && j["patterns"][c.search_key].is_string()
                      ? &j["patterns"][c.search_key]
                      : nullptr;
  // Without the pattern, resolve() gives the error that names what is missing.
  return p ? letter_count(p->get_ref<const std::string&>()) : 1;
}

LayerPattern pattern_of(const ExportArgs& a) {
  const PatternChoice c = PatternChoice::parse(a.pattern);
  const int64_t n = a.n_layers > 0 ? a.n_layers : implied_layers(c, a.pattern);
  IC_CHECK(n >= 1 && n <= kMaxPatternLayers, "--n-layers {}: a layer pattern has 1 to {} layers", n,
           kMaxPatternLayers);
  const std::optional<LayerPattern> p = c.resolve(n);
  IC_CHECK(p.has_value(), "pattern '{}': give FSSF..., freq=N[,offset=M] or search=FILE.json:KEY", a.pattern);
  return *p;
}

ojson export_json(const PatternExport& x) {
  ojson schedule = nullptr;
  if (x.freq_offset)
    schedule = {{"index_topk_freq", x.freq_offset->first}, {"index_skip_topk_offset", x.freq_offset->second}};
  return {{"engine", engine_name(x.engine)}, {"title", engine_title(x.engine)},
          {"fields", ojson::parse(x.json)}, {"text", x.text},
          {"usage", x.usage}, {"schedule", schedule}, {"notes", x.notes}};
}

void run_export(const ExportArgs& a) {
  const std::vector<Engine> engines = parse_engines(a.engines);
  const LayerPattern p = pattern_of(a);
  std::vector<PatternExport> xs;
  for (Engine e : engines) xs.push_back(export_pattern(p, e));
  if (a.json) {
    ojson out = {{"pattern", p.str()}, {"n_layers", p.n_layers()}, {"n_full", p.n_full()},
                 {"exports", ojson::array()}};
    for (const PatternExport& x : xs) out["exports"].push_back(export_json(x));
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("pattern %s (%lld layers, %lld F)\n", p.str().c_str(), (long long)p.n_layers(), (long long)p.n_full());
  for (const PatternExport& x : xs) std::printf("\n%s", export_report(x).c_str());
}

// One reading of config.json: an engine's, or the IndexCache authors' patch (THUDM).
struct Reading {
  std::string rule;
  std::optional<LayerPattern> pattern;  // nullopt: no knob read (all F), or an error
  std::vector<std::string> ignored;
  std::string error;
};

std::vector<Reading> read_all(const hf::Config& c, int64_t n, const std::string& which) {
  std::vector<std::string> names;
  for (Engine e : kEngines) names.emplace_back(engine_name(e));
  names.emplace_back(pattern_rule_name(PatternRule::THUDM));
  if (which != "all") {
    IC_CHECK(std::find(names.begin(), names.end(), which) != names.end(),
             "--rule '{}': known rules are hf, sglang, vllm, trtllm, thudm, all", which);
    names = {which};
  }
  std::vector<Reading> out;
  for (const std::string& name : names) {
    Reading r{name, std::nullopt, {}, ""};
    try {
      if (name == pattern_rule_name(PatternRule::THUDM)) {
        r.pattern = pattern_from_config(c, n, PatternRule::THUDM);
        r.ignored = ignored_knobs(c, PatternRule::THUDM);
      } else {
        const Engine e = parse_engine(name);
        r.pattern = engine_pattern(c, n, e);
        r.ignored = engine_ignored_knobs(c, e);
      }
      if (!r.pattern) r.pattern = LayerPattern::all_full(n);
    } catch (const Error& e) {
      r.pattern.reset();
      r.error = e.what();
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "-" : s;
}

void run_show(const ShowArgs& a) {
  const std::string path = a.model + "/config.json";
  const hf::Config c = hf::Config::load(path);
  const int64_t n = c.get_int("num_hidden_layers");
  IC_CHECK(n >= 1 && n <= kMaxPatternLayers, "{} is {}: 1 to {} layers expected", c.where("num_hidden_layers"), n,
           kMaxPatternLayers);
  std::vector<std::string> knobs;
  for (const char* k : {"indexer_types", "index_topk_pattern", "index_topk_freq", "index_skip_topk_offset"})
    if (c.has(k)) knobs.emplace_back(k);
  const std::vector<Reading> rs = read_all(c, n, lower_ascii(a.rule));
  // transformers' DeepseekV32 reads no knob (configuration_deepseek_v32.py): the hf row is what
  // GlmMoeDsaConfig would read, not what HF runs for this model.
  std::vector<std::string> notes;
  if (c.get_string_or("model_type", "") == "deepseek_v32")
    notes.emplace_back("model_type deepseek_v32: HF transformers runs an indexer on every layer whatever these "
                       "knobs say (the hf row is GlmMoeDsaConfig's reading)");
  bool agree = true;
  for (const Reading& r : rs)
    agree = agree && r.error.empty() && rs[0].error.empty() && *r.pattern == *rs[0].pattern;
  if (a.json) {
    json out = {{"config", path}, {"n_layers", n},       {"knobs", knobs},
                {"agree", agree},  {"notes", notes}, {"rules", json::array()}};
    for (const Reading& r : rs)
      out["rules"].push_back({{"rule", r.rule},
                              {"pattern", r.pattern ? json(r.pattern->str()) : json(nullptr)},
                              {"n_full", r.pattern ? json(r.pattern->n_full()) : json(nullptr)},
                              {"ignored", r.ignored},
                              {"error", r.error.empty() ? json(nullptr) : json(r.error)}});
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("%s: %lld layers (MTP layers excluded); IndexCache knobs: %s\n", path.c_str(), (long long)n,
              joined(knobs).c_str());
  const int width = static_cast<int>(std::max<int64_t>(n, 7));
  std::printf("%-7s| %-4s| %-*s | ignores\n", "rule", "F", width, "pattern");
  for (const Reading& r : rs) {
    if (!r.error.empty()) {
      std::printf("%-7s| error: %s\n", r.rule.c_str(), r.error.c_str());
      continue;
    }
    std::printf("%-7s| %-4lld| %-*s | %s\n", r.rule.c_str(), (long long)r.pattern->n_full(), width,
                r.pattern->str().c_str(), joined(r.ignored).c_str());
  }
  for (const std::string& note : notes) std::printf("note: %s\n", note.c_str());
  if (rs.size() > 1)
    std::printf("%s\n", agree ? "every rule reads the same pattern"
                              : "the rules DISAGREE: engines would run different patterns on this checkpoint "
                                "(`indexcache pattern export PATTERN --for hf` gives fields every engine reads alike)");
}

}  // namespace

void register_pattern(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("pattern", "IndexCache patterns for the serving engines (export, show)");
  cmd->require_subcommand(1);

  auto x = std::make_shared<ExportArgs>();
  CLI::App* ex = cmd->add_subcommand("export", "Print a pattern in the exact form vLLM, SGLang, TensorRT-LLM and HF "
                                               "transformers take");
  ex->add_option("pattern", x->pattern, "FSSF... (one letter per layer), freq=N[,offset=M] (the first M layers F, "
                 "then every N-th; needs --n-layers) or search=FILE.json:KEY (a pattern of indexcache search --json)")
      ->required();
  ex->add_option("--for", x->engines, "vllm, sglang, trtllm, hf or all (default)");
  ex->add_option("--n-layers", x->n_layers, "Layers of the model (MTP layers excluded); needed for freq=N")
      ->check(CLI::PositiveNumber);
  ex->add_flag("--json", x->json, "Print JSON instead of text");
  ex->callback([x] { run_export(*x); });

  auto s = std::make_shared<ShowArgs>();
  CLI::App* sh = cmd->add_subcommand("show", "The pattern a checkpoint's config.json gives under each engine's rule, "
                                             "and the knobs each rule ignores");
  sh->add_option("-m,--model", s->model, "HF model folder (its config.json is read)")->required();
  sh->add_option("--rule", s->rule, "hf, sglang, vllm, trtllm, thudm (the IndexCache authors' patch) or all (default)");
  sh->add_flag("--json", s->json, "Print JSON instead of text");
  sh->callback([s] { run_show(*s); });
}

}  // namespace ic::cli
