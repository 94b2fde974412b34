// libFuzzer target for the pattern export (src/indexcache/pattern_export.h). An input is read
// twice:
//   - as a config.json: each engine's reading (engine_pattern, with the layer count from
//     num_hidden_layers) must give a pattern or throw ic::Error;
//   - as a layer pattern, one letter per byte after the first (odd: F, even: S; layer 0 F), and
//     as every pattern the engines read above.
// Each such pattern is exported for every engine and the export applied onto the input config
// (each top-level key set, as the engines apply overrides and a user merges config.json); read
// back by that engine, it must give the pattern exactly, whatever the config carried. An export
// that throws, or reads back as anything else, is a finding (a trap), as is any exception but
// ic::Error from the reading.
//
// Seeds: fuzz/corpus/pattern_export/, config.json files with every knob (GLM-5.2's list and
// schedule, a pattern string, a pattern list, a bare DeepSeek-V3.2, a schedule with nulls).
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "indexcache/pattern_export.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// More layers than any model; keeps one input's work small.
constexpr int64_t kMaxLayers = 160;

void export_and_read_back(const ic::LayerPattern& p, const nlohmann::json& base) {
  for (ic::Engine e : ic::kEngines) {
    std::optional<ic::PatternExport> x;
    try {
      x = ic::export_pattern(p, e);
    } catch (const ic::Error&) {
      check(false);  // every pattern of at least one layer with layer 0 F can be exported
    }
    nlohmann::json merged = base;
    const nlohmann::json fields = nlohmann::json::parse(x->json);  // named: items() of a temporary dangles
    for (const auto& [k, v] : fields.items()) merged[k] = v;
    try {
      const ic::hf::Config c = ic::hf::Config::parse(merged.dump(), "fuzz/merged/config.json");
      const std::optional<ic::LayerPattern> back = ic::engine_pattern(c, p.n_layers(), e);
      check(back.has_value() && *back == p);
    } catch (const ic::Error&) {
      check(false);  // the export overrides every knob the engine reads before it
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<ic::LayerPattern> patterns;
  if (size >= 1) {
    std::vector<bool> full(std::min<size_t>(size, kMaxLayers), true);
    for (size_t l = 1; l < full.size(); ++l) full[l] = data[l] & 1;
    patterns.push_back(ic::LayerPattern::from_flags(std::move(full)));
  }
  nlohmann::json base = nlohmann::json::object();
  try {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const ic::hf::Config c = ic::hf::Config::parse(text, "fuzz/config.json");
    base = c.json();
    const int64_t n = c.get_int_or("num_hidden_layers", 0);
    if (n >= 1 && n <= kMaxLayers) {
      for (ic::Engine e : ic::kEngines) {
        try {
          // Each distinct pattern once: exporting one again onto the same config checks
          // nothing new (the engines often agree), and the round trips are the target's cost.
          if (auto p = ic::engine_pattern(c, n, e); p && std::find(patterns.begin(), patterns.end(), *p) == patterns.end())
            patterns.push_back(*p);
          (void)ic::engine_ignored_knobs(c, e);
        } catch (const ic::Error&) {
        }
      }
    }
  } catch (const ic::Error&) {
  }
  for (const ic::LayerPattern& p : patterns) export_and_read_back(p, base);
  return 0;
}
