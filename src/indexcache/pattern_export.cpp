// IndexCache layer patterns in each serving engine's form, and the readings of vLLM and
// TensorRT-LLM (see the header for the sources and rules).
#include "indexcache/pattern_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"

namespace ic {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;  // keys in the order written, as a user reads them

using namespace pattern_keys;

// --- vLLM's and TensorRT-LLM's reading ------------------------------------------------------

// One pattern entry as true = F. Both engines take a layer as S only for "S" (TensorRT-LLM
// upper-cases first) and as F for anything else, without a word; we refuse anything but F/S.
bool entry_is_full(std::string_view entry, Engine e, const std::string& where, size_t i) {
  const bool any_case = e == Engine::TRTLLM;
  if (entry == "F" || (any_case && entry == "f")) return true;
  if (entry == "S" || (any_case && entry == "s")) return false;
  fail("{} has \"{}\" at layer {}: {} reads a layer as shared only for \"S\"{} and as full for "
       "anything else; give F or S", where, entry, i, engine_title(e), any_case ? " (either case)" : "");
}

// index_topk_pattern as vLLM / TensorRT-LLM read it: a string of letters or an array of them.
LayerPattern pattern_entries(const hf::Config& c, int64_t n_layers, Engine e) {
  const json& v = c.json().at(kPattern);
  const std::string where = c.where(kPattern);
  IC_CHECK(v.is_string() || v.is_array(), "{} is a JSON {}, a string of F/S letters or an array expected",
           where, v.type_name());
  const size_t n = v.is_string() ? v.get_ref<const std::string&>().size() : v.size();
  IC_CHECK(static_cast<int64_t>(n) == n_layers,
           "{} has {} entries but the model has {} layers ({} reads a layer past its end as full)", where, n,
           n_layers, engine_title(e));
  std::vector<bool> full(n);
  for (size_t i = 0; i < n; ++i) {
    if (v.is_string()) {
      full[i] = entry_is_full(std::string_view(v.get_ref<const std::string&>()).substr(i, 1), e, where, i);
      continue;
    }
    IC_CHECK(v[i].is_string(), "{}[{}] is a JSON {}, a string expected", where, i, v[i].type_name());
    full[i] = entry_is_full(v[i].get_ref<const std::string&>(), e, where, i);
  }
  IC_CHECK(full[0], "{} makes layer 0 shared, but the first layer must be full: an S layer reuses the "
           "selection of a preceding F layer", where);
  return LayerPattern::from_flags(std::move(full));
}

// max(l - offset + 1, 0) % freq == 0 (freq >= 1) for any int64 offset, without overflow.
bool full_at(int64_t l, int64_t freq, int64_t offset) {
  if (l + 1 <= offset) return true;  // the max(..., 0) branch
  return (l + 1) % freq == ((offset % freq) + freq) % freq;
}

// The schedule as vLLM / TensorRT-LLM read it: freq default 1, offset default 2.
LayerPattern pattern_schedule(const hf::Config& c, int64_t n_layers, Engine e) {
  const int64_t freq = c.get_int_or(kFreq, 1);
  IC_CHECK(freq >= 1, "{} is {}, a positive integer expected ({})", c.where(kFreq), freq,
           e == Engine::TRTLLM ? "TensorRT-LLM would take it as 1, every layer full"
                               : "vLLM divides by it");
  const int64_t offset = c.get_int_or(kOffset, 2);
  std::vector<bool> full(static_cast<size_t>(n_layers));
  for (int64_t l = 0; l < n_layers; ++l) full[l] = full_at(l, freq, offset);
  IC_CHECK(full[0], "{}: index_topk_freq {} with index_skip_topk_offset {} makes layer 0 shared under "
           "{}'s rule{}, but the first layer must be full", c.path(), freq, offset, engine_title(e),
           e == Engine::TRTLLM ? " (TensorRT-LLM forces it full with a warning)" : "");
  return LayerPattern::from_flags(std::move(full));
}

std::optional<LayerPattern> pattern_vllm_trtllm(const hf::Config& c, int64_t n_layers, Engine e) {
  IC_CHECK(n_layers >= 1 && n_layers <= kMaxPatternLayers, "{}: a layer pattern has 1 to {} layers, got {}",
           c.path(), kMaxPatternLayers, n_layers);
  if (c.has(kPattern)) return pattern_entries(c, n_layers, e);
  // vLLM does getattr(config, key, default): a key that is there but null is None, and the
  // schedule's arithmetic fails on it (TensorRT-LLM's `or 1` copes with a null freq; its offset
  // is used as is).
  for (const char* k : {kFreq, kOffset}) {
    const bool null = c.json().contains(k) && c.json().at(k).is_null();
    const bool fails = e == Engine::VLLM || std::string_view(k) == kOffset;
    IC_CHECK(!(null && fails), "{} is null and there is no index_topk_pattern: {} would compute the "
             "schedule with None and fail", c.where(k), engine_title(e));
  }
  if (!c.has(kFreq) && !c.has(kOffset)) return std::nullopt;
  return pattern_schedule(c, n_layers, e);
}

PatternRule rule_of(Engine e) { return e == Engine::SGLang ? PatternRule::SGLang : PatternRule::HF; }

// --- the export ---------------------------------------------------------------------------

std::vector<std::string> indexer_types(const LayerPattern& p) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < p.n_layers(); ++l) out.emplace_back(p.is_full(l) ? "full" : "shared");
  return out;
}

// config.json lines: one key per line, each value compact (a 78-entry list stays one line).
std::string config_lines(const ojson& fields) {
  std::string out = "{\n";
  size_t i = 0;
  for (auto it = fields.begin(); it != fields.end(); ++it, ++i)
    out += fmt::format("  {}: {}{}\n", json(it.key()).dump(), it.value().dump(), i + 1 < fields.size() ? "," : "");
  return out + "}";
}

// "vLLM's", "HF transformers'".
std::string possessive(std::string_view title) {
  return std::string(title) + (title.back() == 's' ? "'" : "'s");
}

std::string schedule_words(const std::pair<int64_t, int64_t>& fo) {
  return fmt::format("index_topk_freq {} with index_skip_topk_offset {}", fo.first, fo.second);
}

// The engine's JSON object and notes; the schedule when exact, else the explicit pattern.
ojson export_fields(const LayerPattern& p, Engine e, PatternExport& out) {
  ojson f = ojson::object();
  const auto& fo = out.freq_offset;
  auto& notes = out.notes;
  const std::string title(engine_title(e));
  if (fo) {
    notes.push_back(fmt::format("{} gives this pattern exactly under {} rule, so the schedule is written",
                                schedule_words(*fo), possessive(title)));
  } else {
    notes.push_back(fmt::format("no index_topk_freq / index_skip_topk_offset gives this pattern under {} "
                                "rule (a schedule is the first `offset` layers F, then one F every `freq` "
                                "layers); the explicit pattern is written", possessive(title)));
  }
  switch (e) {
    case Engine::VLLM:
    case Engine::TRTLLM:
      if (fo) {
        f[kFreq] = fo->first;
        f[kOffset] = fo->second;
        f[kPattern] = nullptr;
        notes.push_back(fmt::format("index_topk_pattern is null: {} reads a pattern before the schedule, and "
                                    "the checkpoint may carry one", title));
      } else {
        f[kPattern] = p.str();
      }
      notes.push_back(fmt::format("{} does not read indexer_types; a checkpoint's list (GLM-5.2 ships one) has no "
                                  "effect there, but HF transformers and SGLang read it first", title));
      break;
    case Engine::SGLang:
      if (fo) {
        f[kFreq] = fo->first;
        f[kOffset] = fo->second;
        f[kPattern] = nullptr;
      } else {
        f[kPattern] = p.str();
      }
      f[kTypes] = nullptr;
      notes.push_back(std::string("indexer_types") + (fo ? " and index_topk_pattern are" : " is") +
                      " null: SGLang reads them before what is given, and transformers' GlmMoeDsaConfig fills "
                      "indexer_types from the checkpoint before SGLang applies the override (config.update), so "
                      "a glm_moe_dsa model would otherwise keep the checkpoint's pattern");
      break;
    case Engine::HF:
      f[kTypes] = indexer_types(p);
      f[kPattern] = p.str();
      if (fo) {
        f[kFreq] = fo->first;
        f[kOffset] = fo->second;
      } else {
        f[kFreq] = nullptr;
        f[kOffset] = nullptr;
        notes.push_back("index_topk_freq and index_skip_topk_offset are null: no engine reads them beside the "
                        "pattern, but a schedule left in config.json (GLM-5.2 ships freq 4 / offset 3) would "
                        "contradict it");
      }
      notes.push_back("GlmMoeDsaConfig (model_type glm_moe_dsa) reads indexer_types, then index_topk_pattern; "
                      "index_topk_pattern is also what vLLM, TensorRT-LLM and the IndexCache authors' patch read, "
                      "so every engine reads the same layers from these fields");
      notes.push_back("transformers' DeepseekV32Config (model_type deepseek_v32) reads none of these keys: it runs "
                      "an indexer on every layer (the sharing lives in glm_moe_dsa)");
      break;
  }
  return f;
}

void check_read_back(const PatternExport& out, const LayerPattern& p) {
  const hf::Config c = hf::Config::parse(out.json, fmt::format("<{} export>", engine_name(out.engine)));
  const std::optional<LayerPattern> back = engine_pattern(c, p.n_layers(), out.engine);
  IC_ASSERT(back && *back == p);
  if (out.engine != Engine::HF) return;
  // The HF fields are meant for the one config.json every engine reads: check that they do.
  for (Engine e : kEngines) {
    const std::optional<LayerPattern> q = engine_pattern(c, p.n_layers(), e);
    IC_ASSERT(q && *q == p);
  }
  const std::optional<LayerPattern> thudm = pattern_from_config(c, p.n_layers(), PatternRule::THUDM);
  IC_ASSERT(thudm && *thudm == p);
}

}  // namespace

std::string_view engine_name(Engine e) {
  switch (e) {
    case Engine::VLLM: return "vllm";
    case Engine::SGLang: return "sglang";
    case Engine::TRTLLM: return "trtllm";
    case Engine::HF: return "hf";
  }
  return "?";
}

std::string_view engine_title(Engine e) {
  switch (e) {
    case Engine::VLLM: return "vLLM";
    case Engine::SGLang: return "SGLang";
    case Engine::TRTLLM: return "TensorRT-LLM";
    case Engine::HF: return "HF transformers";
  }
  return "?";
}

Engine parse_engine(std::string_view name) {
  const std::string n = ascii_lower(name);
  for (Engine e : kEngines)
    if (n == engine_name(e)) return e;
  fail("unknown serving engine '{}' (known: vllm, sglang, trtllm, hf)", name);
}

std::vector<Engine> parse_engines(std::string_view name) {
  if (ascii_lower(name) == "all") return {std::begin(kEngines), std::end(kEngines)};
  return {parse_engine(name)};
}

PatternExport export_pattern(const LayerPattern& p, Engine e) {
  IC_CHECK(p.n_layers() >= 1, "cannot export an empty layer pattern");
  PatternExport out;
  out.engine = e;
  out.freq_offset = as_freq_offset(p, rule_of(e));
  const ojson f = export_fields(p, e, out);
  out.json = f.dump();
  switch (e) {
    case Engine::VLLM:
      out.text = "--hf-overrides '" + out.json + "'";
      out.usage = "vllm serve MODEL_DIR --hf-overrides '<json>'";
      break;
    case Engine::SGLang:
      out.text = "--json-model-override-args '" + out.json + "'";
      out.usage = "python -m sglang.launch_server --model-path MODEL_DIR --json-model-override-args '<json>'";
      break;
    case Engine::TRTLLM:
      out.text = config_lines(f);
      out.usage = "merge into MODEL_DIR/config.json; its sparse_attention_config (DeepSeekSparseAttentionConfig) has "
                  "no key for index sharing and reads these from the checkpoint's config";
      break;
    case Engine::HF:
      out.text = config_lines(f);
      out.usage = "merge into MODEL_DIR/config.json";
      break;
  }
  check_read_back(out, p);
  return out;
}

std::string export_report(const PatternExport& x) {
  std::string s = fmt::format("{}: {}\n", engine_title(x.engine), x.usage);
  const std::string& t = x.text;
  for (size_t at = 0; at <= t.size();) {
    const size_t nl = std::min(t.find('\n', at), t.size());
    s += "  " + t.substr(at, nl - at) + "\n";
    at = nl + 1;
  }
  for (const std::string& n : x.notes) s += "  - " + n + "\n";
  return s;
}

std::optional<LayerPattern> engine_pattern(const hf::Config& c, int64_t n_layers, Engine e) {
  if (e == Engine::SGLang || e == Engine::HF) return pattern_from_config(c, n_layers, rule_of(e));
  return pattern_vllm_trtllm(c, n_layers, e);
}

std::vector<std::string> engine_ignored_knobs(const hf::Config& c, Engine e) {
  if (e == Engine::SGLang || e == Engine::HF) return ignored_knobs(c, rule_of(e));
  std::vector<std::string> out;
  if (c.has(kTypes)) out.emplace_back(kTypes);  // never read
  if (c.has(kPattern))                          // the pattern wins over the schedule
    for (const char* k : {kFreq, kOffset})
      if (c.has(k)) out.emplace_back(k);
  return out;
}

}  // namespace ic
