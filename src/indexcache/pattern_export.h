#pragma once
// An IndexCache layer pattern in the exact form each serving engine takes, and each engine's
// reading of config.json restated, so an export can be read back the way the engine will.
//
// Where each form comes from (sources as stored in 2026; the rules restated in our words):
//
// vLLM — `vllm serve MODEL --hf-overrides '<json>'`: vllm/config/model.py applies the object with
//   setattr on the loaded HF config, one top-level key at a time (a JSON null sets None).
//   vllm/model_executor/models/deepseek_v2.py, DeepseekV2MLAAttention.__init__ ("IndexCache
//   config"): a layer is S when index_topk_pattern is set and its entry equals "S" (a layer past
//   the pattern's end is F); with no pattern, S when max(l - offset + 1, 0) % freq != 0,
//   index_topk_freq defaulting to 1 and index_skip_topk_offset to 2. indexer_types is not read.
//
// SGLang — `--json-model-override-args '<json>'`: srt/utils/hf_transformers_utils.py get_config
//   applies it with config.update() after the HF config is built. dsa_layer_skips_topk: per layer
//   indexer_types wins, then index_topk_pattern, then the schedule (PatternRule::SGLang in
//   model/pattern_conventions.h). transformers' GlmMoeDsaConfig.__post_init__ always fills
//   indexer_types from the checkpoint, and update() does not run it again, so on a glm_moe_dsa
//   model an override must clear indexer_types (null) or SGLang keeps the checkpoint's pattern.
//
// TensorRT-LLM — its LLM API / YAML `sparse_attention_config` for DSA
//   (DeepSeekSparseAttentionConfig, algorithm "dsa", tensorrt_llm/llmapi/llm_args.py) has no
//   field for index sharing (only index_share_for_mtp_iteration, for MTP draft steps).
//   _is_full_indexer_layer reads the pattern from the checkpoint's config.json: a layer is S
//   when index_topk_pattern is set and str(entry).upper() == "S"; else freq = max(freq or 1, 1),
//   offset default 2, F where max(l - offset + 1, 0) % freq == 0; layer 0 is forced F (with a
//   warning); MTP layers are F. indexer_types is not read. So its export is config.json fields.
//
// HF transformers — config.json fields. GlmMoeDsaConfig (configuration_glm_moe_dsa.py,
//   model_type glm_moe_dsa) derives indexer_types once: given indexer_types, else
//   index_topk_pattern, else the schedule (PatternRule::HF). DeepseekV32Config
//   (configuration_deepseek_v32.py) reads none of the knobs: its modeling runs an indexer on
//   every layer ("the cross-layer top-k sharing variant ... lives in" glm_moe_dsa).
//
// The schedule (index_topk_freq + index_skip_topk_offset) is preferred where it gives the pattern
// exactly under the engine's rule (as_freq_offset); otherwise the explicit pattern, which every
// engine above reads. The override forms clear the knobs the engine would read before the one
// given (null), since the checkpoint may carry them (GLM-5.2 ships indexer_types and freq 4 /
// offset 3). The HF form is the one config.json that every engine, and the IndexCache authors'
// patch (PatternRule::THUDM), reads alike: indexer_types and index_topk_pattern both, with the
// schedule when it is exact. MTP/NextN layers are outside every pattern.
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

enum class Engine { VLLM, SGLang, TRTLLM, HF };
inline constexpr Engine kEngines[] = {Engine::VLLM, Engine::SGLang, Engine::TRTLLM, Engine::HF};

std::string_view engine_name(Engine e);   // "vllm", "sglang", "trtllm", "hf"
std::string_view engine_title(Engine e);  // "vLLM", "SGLang", "TensorRT-LLM", "HF transformers"
// From "vllm", "sglang", "trtllm" or "hf" (case-insensitive); throws listing them otherwise.
Engine parse_engine(std::string_view name);
// parse_engine's names, or "all" for every engine in kEngines' order.
std::vector<Engine> parse_engines(std::string_view name);

struct PatternExport {
  Engine engine = Engine::HF;
  std::string json;   // the JSON object the engine takes, compact
  std::string text;   // exactly what to pass: "--hf-overrides '<json>'", or config.json lines
  std::string usage;  // where it goes: "vllm serve MODEL_DIR --hf-overrides ...", "config.json"
  // The schedule when it gives the pattern exactly under this engine's rule (then written so),
  // else nullopt and the explicit pattern is written.
  std::optional<std::pair<int64_t, int64_t>> freq_offset;
  std::vector<std::string> notes;  // what the user must know about this engine's reading
};

// The pattern in `engine`'s form. Checked before it is returned: the JSON, read back with the
// engine's rule (engine_pattern), gives `pattern`.
PatternExport export_pattern(const LayerPattern& pattern, Engine engine);
// For a terminal: the engine, where the text goes, the text indented, and the notes.
std::string export_report(const PatternExport& x);

// The pattern `engine` reads from `config` (a config.json, overrides applied) for a model of
// n_layers (MTP layers excluded), or nullopt when the config has none of the knobs that engine
// reads (all F). SGLang and HF are pattern_from_config's rules. As there, stricter than the
// engine: a pattern not of n_layers entries, an entry the engine would silently read as F
// (vLLM: anything but "S" and "F"; TensorRT-LLM: anything but F/S in either case), freq < 1,
// a null the engine would fail on (vLLM's schedule), or a layer 0 that comes out S are errors
// naming config.json and the key.
std::optional<LayerPattern> engine_pattern(const hf::Config& config, int64_t n_layers, Engine engine);

// The knobs present in `config` that `engine` did not use (see ignored_knobs).
std::vector<std::string> engine_ignored_knobs(const hf::Config& config, Engine engine);

}  // namespace ic
