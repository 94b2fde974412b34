#pragma once
// The IndexCache knobs of an HF config.json, read the way each engine reads them. Three knobs
// exist in the ecosystem:
//   indexer_types           GLM-5.2: ["full", "shared", ...], one entry per layer
//   index_topk_pattern      "FSSF...", one letter per layer (F computes its top-k, S reuses)
//   index_topk_freq         with index_skip_topk_offset: a periodic schedule
// and the engines disagree on which knob wins and on the periodic formula, so the same
// config.json can mean different patterns. Each rule below is one engine's, read from its
// source (2026) and restated in our words:
//
// PatternRule::THUDM — the IndexCache authors' SGLang/vLLM patch (deepseek_v2.py, the
//   `skip_topk` / `next_skip_topk` fields): knows only index_topk_pattern and index_topk_freq.
//   A pattern wins; layer l is S where its letter is 'S'. Otherwise layer l is S when
//   max(l - 1, 0) % freq != 0, so layers 0 and 1 are F and then every freq-th layer
//   (freq 4: FFSSSFSSSF...). index_skip_topk_offset and indexer_types are not read.
//
// PatternRule::SGLang — SGLang's dsa_layer_skips_topk (GLM-5.2 support): per layer, an
//   indexer_types entry wins ("full"/"f"/"compute" vs "shared"/"s"/"skip", case-insensitive),
//   then an index_topk_pattern entry (letters or such words), then the schedule: freq <= 1
//   means every layer computes; with an offset, layer l is S when
//   max(l - offset + 1, 0) % freq != 0 (the offset must be positive); without one, THUDM's
//   formula, which is the same as offset 2.
//
// PatternRule::HF — transformers' GlmMoeDsaConfig.__post_init__ (configuration_glm_moe_dsa.py)
//   derives indexer_types once: given indexer_types wins; else index_topk_pattern (a string
//   of 'F'/'S', or a list used as indexer_types); else full where
//   max(l - offset + 1, 0) % max(freq, 1) == 0 with freq default 1 and offset default 2.
//
// So freq + offset mean the same thing under SGLang and HF (offset >= 1: the first `offset`
// layers are F, then every freq-th); THUDM ignores the offset and always anchors as offset 2.
// ic::LayerPattern::from_freq(n, freq, offset) is the SGLang/HF formula for offset >= 1, and
// THUDM's schedule is from_freq(n, freq, 2). GLM-5.2 (freq 4, offset 3, 78 layers) is F at
// 0, 1, 2, 6, 10, ..., 74 under SGLang and HF (21 layers), and its indexer_types lists the same.
//
// Where an engine silently accepts nonsense our reading is stricter and throws instead: a list
// shorter or longer than the model (SGLang falls back per layer, THUDM indexes past the end),
// letters other than F/S (THUDM reads any non-'S' as F), freq < 1 (SGLang and HF treat it as
// 1). MTP/NextN layers are not covered: they always compute their own selection.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/layer_pattern.h"

namespace ic {

namespace hf {
class Config;
}

enum class PatternRule { THUDM, SGLang, HF };

std::string_view pattern_rule_name(PatternRule r);  // "thudm", "sglang", "hf"
// From "thudm", "sglang" or "hf" (case-insensitive); throws listing them otherwise.
PatternRule parse_pattern_rule(std::string_view name);

// The config.json keys of the knobs, shared with the exporters (indexcache/pattern_export).
namespace pattern_keys {
inline constexpr const char* kTypes = "indexer_types";
inline constexpr const char* kPattern = "index_topk_pattern";
inline constexpr const char* kFreq = "index_topk_freq";
inline constexpr const char* kOffset = "index_skip_topk_offset";
}  // namespace pattern_keys

// `s` with A-Z lower-cased and every other byte kept: how SGLang and TensorRT-LLM fold the case
// of knob entries, and how engine and rule names are matched here.
std::string ascii_lower(std::string_view s);

// More layers than any model has; bounds what a hostile config can make us allocate.
constexpr int64_t kMaxPatternLayers = 1 << 16;

// The pattern `rule` reads from `config` for a model of n_layers (MTP layers excluded), or
// nullopt when the config has none of the knobs that rule reads (the model is all F). Throws,
// naming config.json and the key: a list or string whose length is not n_layers, an entry that
// is not F/S (full/shared), freq < 1, an offset SGLang rejects, or a pattern whose first layer
// is S (nothing precedes it to share from).
std::optional<LayerPattern> pattern_from_config(const hf::Config& config, int64_t n_layers,
                                                PatternRule rule);

// The keys present in `config` that `rule` did not use to build its pattern (overridden by a
// knob it prefers, or not read at all), e.g. {"index_skip_topk_offset"} under THUDM: what a
// loader should warn about, since another engine would read them.
std::vector<std::string> ignored_knobs(const hf::Config& config, PatternRule rule);

// The periodic schedule alone: index_topk_freq = freq and index_skip_topk_offset = offset
// (nullopt: the key is absent) under `rule`. Throws for freq < 1, for an offset SGLang
// rejects, and when the result's first layer is S (HF with offset <= 0).
LayerPattern pattern_from_freq(int64_t n_layers, int64_t freq, std::optional<int64_t> offset,
                               PatternRule rule);

// The inverse, for export: (freq, offset) that `rule` reads back as `pattern`, or nullopt when
// no schedule of that rule gives it. All F gives freq 1 (offset 1; THUDM: 2). THUDM's offset is
// always 2, the anchor its formula has built in (a THUDM config needs only the freq).
std::optional<std::pair<int64_t, int64_t>> as_freq_offset(const LayerPattern& pattern,
                                                          PatternRule rule);

}  // namespace ic
