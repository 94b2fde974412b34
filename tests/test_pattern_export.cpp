// IndexCache patterns exported for vLLM, SGLang, TensorRT-LLM and HF transformers: every export,
// applied onto checkpoint configs the way the engine applies it and read back with that engine's
// rule, gives the same F/S layers; schedules where exact, the explicit pattern otherwise; the
// vLLM and TensorRT-LLM readings against a slow restatement of their sources; the errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "core/error.h"
#include "indexcache/pattern_export.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"
#include "test_util.h"

namespace ic {
namespace {

using json = nlohmann::json;

hf::Config cfg(const json& j) { return hf::Config::parse(j.dump(), "/m/config.json"); }

// The pattern string `e` reads, "" for nullopt.
std::string read(const json& j, int64_t n, Engine e) {
  const std::optional<LayerPattern> p = engine_pattern(cfg(j), n, e);
  return p ? p->str() : "";
}

// An override or config.json fragment applied as the engines apply theirs: each top-level key
// set (vLLM's setattr, SGLang's config.update, a merge into config.json); null sets None.
json apply(json base, const json& fields) {
  for (const auto& [k, v] : fields.items()) base[k] = v;
  return base;
}

std::vector<std::string> types_of(const LayerPattern& p) {
  std::vector<std::string> t;
  for (int64_t l = 0; l < p.n_layers(); ++l) t.push_back(p.is_full(l) ? "full" : "shared");
  return t;
}

// Checkpoint configs an export lands on, n_layers each: a bare DeepSeek-V3.2 one (no knob), a
// GLM-5.2 one as transformers' GlmMoeDsaConfig leaves it (indexer_types filled from freq 4 /
// offset 3, the schedule kept), and one carrying another pattern in every knob.
std::vector<std::pair<std::string, json>> checkpoint_configs(int64_t n) {
  json bare = {{"model_type", "deepseek_v32"}, {"num_hidden_layers", n}, {"index_topk", 2048}};
  json glm = bare;
  glm["model_type"] = "glm_moe_dsa";
  glm["index_topk_freq"] = 4;
  glm["index_skip_topk_offset"] = 3;
  glm["indexer_types"] = types_of(LayerPattern::from_freq(n, 4, 3));
  json other = bare;
  std::string letters = "F" + std::string(static_cast<size_t>(n - 1), 'S');
  other["index_topk_pattern"] = letters;
  other["indexer_types"] = types_of(LayerPattern::parse(letters, n));
  other["index_topk_freq"] = 3;
  other["index_skip_topk_offset"] = 1;
  return {{"bare", bare}, {"glm-5.2", glm}, {"other pattern", other}};
}

// Every export of p, on every checkpoint config, read back by its engine, gives p.
void expect_round_trip(const LayerPattern& p) {
  const int64_t n = p.n_layers();
  for (Engine e : kEngines) {
    SCOPED_TRACE(fmt::format("{} for {}", p.str(), engine_name(e)));
    const PatternExport x = export_pattern(p, e);
    EXPECT_EQ(x.engine, e);
    const json fields = json::parse(x.json);
    ASSERT_TRUE(fields.is_object());
    // The schedule is written exactly when one is exact under the engine's rule.
    const auto fo = as_freq_offset(p, e == Engine::SGLang ? PatternRule::SGLang : PatternRule::HF);
    EXPECT_EQ(x.freq_offset, fo);
    if (fo && e != Engine::HF) {
      EXPECT_EQ(fields.at("index_topk_freq"), fo->first);
      EXPECT_EQ(fields.at("index_skip_topk_offset"), fo->second);
      EXPECT_TRUE(fields.at("index_topk_pattern").is_null());
    } else if (e != Engine::HF) {
      EXPECT_EQ(fields.at("index_topk_pattern"), p.str());
      EXPECT_FALSE(fields.contains("index_topk_freq"));
    }
    // The text is the JSON in the engine's flag, or config.json lines that parse to it.
    if (e == Engine::VLLM) EXPECT_EQ(x.text, "--hf-overrides '" + x.json + "'");
    if (e == Engine::SGLang) EXPECT_EQ(x.text, "--json-model-override-args '" + x.json + "'");
    if (e == Engine::TRTLLM || e == Engine::HF) EXPECT_EQ(json::parse(x.text), fields);
    EXPECT_EQ(x.json.find('\''), std::string::npos);  // safe inside the shell's '...'
    for (const auto& [name, base] : checkpoint_configs(n)) {
      SCOPED_TRACE(name);
      EXPECT_EQ(read(apply(base, fields), n, e), p.str());
    }
    if (e != Engine::HF) continue;
    // The HF fields: GlmMoeDsaConfig's own list, and one config.json every engine reads alike.
    EXPECT_EQ(fields.at("indexer_types"), json(types_of(p)));
    EXPECT_EQ(fields.at("index_topk_pattern"), p.str());
    for (const auto& [name, base] : checkpoint_configs(n)) {
      SCOPED_TRACE(name);
      const json merged = apply(base, fields);
      for (Engine r : kEngines) EXPECT_EQ(read(merged, n, r), p.str()) << engine_name(r);
      EXPECT_EQ(pattern_from_config(cfg(merged), n, PatternRule::THUDM)->str(), p.str());
      for (Engine r : kEngines)
        for (const std::string& k : engine_ignored_knobs(cfg(merged), r))
          EXPECT_TRUE(k == "index_topk_freq" || k == "index_skip_topk_offset" || k == "index_topk_pattern" ||
                      k == "indexer_types")
              << k;
    }
  }
}

// The paper's searched 1/4 pattern of its 47-layer model (12 F, not periodic).
constexpr const char* kPaper47 = "FSFSFSSSSFSSSFSSFFSSFSSFSSSSFSSSFSSSSFSSSSSSSSS";

TEST(PatternExport, Glm52ScheduleForEveryEngine) {
  const LayerPattern glm = LayerPattern::from_freq(78, 4, 3);
  ASSERT_EQ(glm.n_full(), 21);
  for (Engine e : kEngines) {
    const PatternExport x = export_pattern(glm, e);
    EXPECT_EQ(x.freq_offset, std::make_pair(int64_t{4}, int64_t{3})) << engine_name(e);
  }
  EXPECT_EQ(export_pattern(glm, Engine::VLLM).text,
            R"(--hf-overrides '{"index_topk_freq":4,"index_skip_topk_offset":3,"index_topk_pattern":null}')");
  EXPECT_EQ(export_pattern(glm, Engine::SGLang).text,
            R"(--json-model-override-args '{"index_topk_freq":4,"index_skip_topk_offset":3,)"
            R"("index_topk_pattern":null,"indexer_types":null}')");
  expect_round_trip(glm);
}

TEST(PatternExport, PaperSearchedPatternIsExplicit) {
  const LayerPattern p = LayerPattern::parse(kPaper47, 47);
  ASSERT_EQ(p.n_full(), 12);
  for (Engine e : kEngines) {
    const PatternExport x = export_pattern(p, e);
    EXPECT_FALSE(x.freq_offset) << engine_name(e);
    bool said = false;
    for (const std::string& n : x.notes) said = said || n.find("no index_topk_freq") != std::string::npos;
    EXPECT_TRUE(said) << "the export must say the schedule cannot express it";
  }
  EXPECT_EQ(export_pattern(p, Engine::VLLM).text, std::string("--hf-overrides '{\"index_topk_pattern\":\"") +
                                                      kPaper47 + "\"}'");
  const json hf = json::parse(export_pattern(p, Engine::HF).json);
  EXPECT_TRUE(hf.at("index_topk_freq").is_null());  // clears a checkpoint's schedule
  expect_round_trip(p);
}

TEST(PatternExport, UniformAllFullAndEdgePatterns) {
  for (int64_t n : {1, 2, 3, 30, 47, 61, 78}) {
    expect_round_trip(LayerPattern::all_full(n));
    for (int64_t freq : {2, 3, 4, 8})
      for (int64_t offset : {1, 2, 3}) expect_round_trip(LayerPattern::from_freq(n, freq, offset));
  }
  // All F is the schedule freq 1 (offset 1), every layer computing.
  EXPECT_EQ(export_pattern(LayerPattern::all_full(30), Engine::TRTLLM).freq_offset,
            std::make_pair(int64_t{1}, int64_t{1}));
  // Only layer 0 F: a schedule whose period passes the end.
  const LayerPattern one = LayerPattern::parse("FSSSSSSS", 8);
  EXPECT_TRUE(export_pattern(one, Engine::VLLM).freq_offset);
  expect_round_trip(one);
  // Periodic but for one layer, and a leading run then no period: explicit.
  for (const char* s : {"FSSSFSSSFSSFSSSF", "FFFFSFSSSSSS", "FSFFSFSSFS"}) {
    const LayerPattern p = LayerPattern::parse(s, static_cast<int64_t>(std::string(s).size()));
    EXPECT_FALSE(export_pattern(p, Engine::VLLM).freq_offset) << s;
    expect_round_trip(p);
  }
}

TEST(PatternExport, RandomIrregularPatterns) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 96)(rng);
    const double p_full = std::uniform_real_distribution<double>(0.05, 0.9)(rng);
    std::string s = "F";
    for (int64_t l = 1; l < n; ++l) s += std::bernoulli_distribution(p_full)(rng) ? 'F' : 'S';
    expect_round_trip(LayerPattern::parse(s, n));
  }
}

// vLLM's and TensorRT-LLM's per-layer test, as their sources write it (true = S).
bool engine_skips(Engine e, int64_t l, const json& c) {
  if (c.contains("index_topk_pattern") && !c["index_topk_pattern"].is_null()) {
    const json& p = c["index_topk_pattern"];
    const size_t len = p.is_string() ? p.get_ref<const std::string&>().size() : p.size();  // size() of a string is 1
    if (l >= static_cast<int64_t>(len)) return false;
    const std::string x = p.is_string() ? p.get<std::string>().substr(l, 1) : p[l].get<std::string>();
    return e == Engine::TRTLLM ? (x == "S" || x == "s") : x == "S";
  }
  int64_t freq = c.value("index_topk_freq", int64_t{1});
  if (e == Engine::TRTLLM) freq = std::max<int64_t>(freq, 1);
  const int64_t offset = c.value("index_skip_topk_offset", int64_t{2});
  const int64_t a = std::max<int64_t>(l - offset + 1, 0);
  const bool skip = a % freq != 0;
  return e == Engine::TRTLLM && l == 0 ? false : skip;
}

TEST(PatternExport, VllmAndTrtllmReadingsMatchTheirSources) {
  std::mt19937_64 rng(std::random_device{}());
  for (Engine e : {Engine::VLLM, Engine::TRTLLM}) {
    for (int trial = 0; trial < 400; ++trial) {
      const int64_t n = std::uniform_int_distribution<int64_t>(1, 80)(rng);
      json c = {{"num_hidden_layers", n}};
      if (trial % 3 == 0) {
        std::string s = "F";
        for (int64_t l = 1; l < n; ++l) {
          const int r = std::uniform_int_distribution<int>(0, 3)(rng);
          s += "FSfs"[e == Engine::TRTLLM ? r : r % 2];
        }
        c["index_topk_pattern"] = s;
        c["index_topk_freq"] = 2;  // ignored beside a pattern
      } else {
        c["index_topk_freq"] = std::uniform_int_distribution<int64_t>(1, 9)(rng);
        if (trial % 5) c["index_skip_topk_offset"] = std::uniform_int_distribution<int64_t>(1, 7)(rng);
      }
      std::string want;
      for (int64_t l = 0; l < n; ++l) want += engine_skips(e, l, c) ? 'S' : 'F';
      SCOPED_TRACE(c.dump());
      EXPECT_EQ(read(c, n, e), want);
      // Without indexer_types and with F/S letters, the HF rule reads the same.
      if (e == Engine::VLLM) EXPECT_EQ(pattern_from_config(cfg(c), n, PatternRule::HF)->str(), want);
    }
  }
  // A list of letters, as both compare entries one by one.
  EXPECT_EQ(read({{"index_topk_pattern", {"F", "S", "F"}}}, 3, Engine::VLLM), "FSF");
  EXPECT_EQ(read({{"index_topk_pattern", {"F", "s", "S"}}}, 3, Engine::TRTLLM), "FSS");
  // No knob: nullopt (all F); TensorRT-LLM's `or 1` takes a null freq as 1.
  EXPECT_EQ(read({{"index_topk", 2048}}, 4, Engine::VLLM), "");
  EXPECT_EQ(read({{"index_topk_freq", nullptr}, {"index_skip_topk_offset", 3}}, 4, Engine::TRTLLM), "FFFF");
}

TEST(PatternExport, EnginesDisagreeOnAGlm52CheckpointWithASearchedList) {
  // indexer_types says the searched pattern, the schedule says GLM-5.2's: HF and SGLang read the
  // list, vLLM and TensorRT-LLM (which do not read indexer_types) the schedule.
  const LayerPattern searched = LayerPattern::parse(kPaper47, 47);
  const json c = {{"index_topk_freq", 4}, {"index_skip_topk_offset", 3}, {"indexer_types", types_of(searched)}};
  EXPECT_EQ(read(c, 47, Engine::HF), kPaper47);
  EXPECT_EQ(read(c, 47, Engine::SGLang), kPaper47);
  EXPECT_EQ(read(c, 47, Engine::VLLM), LayerPattern::from_freq(47, 4, 3).str());
  EXPECT_EQ(read(c, 47, Engine::TRTLLM), LayerPattern::from_freq(47, 4, 3).str());
  EXPECT_EQ(engine_ignored_knobs(cfg(c), Engine::VLLM), std::vector<std::string>{"indexer_types"});
  EXPECT_EQ(engine_ignored_knobs(cfg(c), Engine::HF),
            (std::vector<std::string>{"index_topk_freq", "index_skip_topk_offset"}));
  const json p = {{"index_topk_pattern", "FSF"}, {"index_topk_freq", 2}, {"index_skip_topk_offset", 1}};
  EXPECT_EQ(engine_ignored_knobs(cfg(p), Engine::TRTLLM),
            (std::vector<std::string>{"index_topk_freq", "index_skip_topk_offset"}));
}

TEST(PatternExport, Errors) {
  EXPECT_EQ(parse_engine("vLLM"), Engine::VLLM);
  EXPECT_EQ(parse_engines("all").size(), 4u);
  EXPECT_IC_ERROR(parse_engine("tensorrt"), "unknown serving engine 'tensorrt' (known: vllm, sglang, trtllm, hf)");
  EXPECT_IC_ERROR(parse_engines("every"), "unknown serving engine 'every'");
  EXPECT_IC_ERROR(export_pattern(LayerPattern(), Engine::HF), "empty layer pattern");

  // Entries an engine would silently read as F.
  EXPECT_IC_ERROR(read({{"index_topk_pattern", "FsF"}}, 3, Engine::VLLM),
                  "'index_topk_pattern' has \"s\" at layer 1: vLLM reads a layer as shared only for \"S\"");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", "FxF"}}, 3, Engine::TRTLLM), "(either case)");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", {"full", "shared"}}}, 2, Engine::VLLM), "\"full\" at layer 0");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", {"F", 1}}}, 2, Engine::VLLM), "[1] is a JSON number");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", 7}}, 2, Engine::TRTLLM), "is a JSON number, a string of F/S");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", "FSF"}}, 4, Engine::VLLM),
                  "has 3 entries but the model has 4 layers (vLLM reads a layer past its end as full)");
  EXPECT_IC_ERROR(read({{"index_topk_pattern", "SFF"}}, 3, Engine::TRTLLM), "makes layer 0 shared");
  // Schedules.
  EXPECT_IC_ERROR(read({{"index_topk_freq", 0}}, 4, Engine::VLLM), "'index_topk_freq' is 0, a positive integer");
  EXPECT_IC_ERROR(read({{"index_topk_freq", -2}}, 4, Engine::TRTLLM), "TensorRT-LLM would take it as 1");
  EXPECT_IC_ERROR(read({{"index_topk_freq", "4"}}, 4, Engine::VLLM), "an integer expected");
  EXPECT_IC_ERROR(read({{"index_topk_freq", 4}, {"index_skip_topk_offset", 0}}, 8, Engine::VLLM),
                  "index_topk_freq 4 with index_skip_topk_offset 0 makes layer 0 shared under vLLM's rule");
  EXPECT_IC_ERROR(read({{"index_topk_freq", 4}, {"index_skip_topk_offset", -1}}, 8, Engine::TRTLLM),
                  "TensorRT-LLM forces it full with a warning");
  EXPECT_IC_ERROR(read({{"index_topk_freq", nullptr}}, 4, Engine::VLLM), "would compute the schedule with None");
  EXPECT_IC_ERROR(read({{"index_topk_freq", 4}, {"index_skip_topk_offset", nullptr}}, 4, Engine::TRTLLM),
                  "'index_skip_topk_offset' is null");
  EXPECT_IC_ERROR(read({{"index_topk_freq", 2}}, 0, Engine::VLLM), "1 to 65536 layers, got 0");
  // SGLang and HF are pattern_conventions' readers, with their errors.
  EXPECT_IC_ERROR(read({{"indexer_types", {"full", "maybe"}}}, 2, Engine::HF), "\"full\" or \"shared\" expected");
}

}  // namespace
}  // namespace ic
