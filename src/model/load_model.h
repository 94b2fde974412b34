#pragma once
// One entry point that picks the architecture from what it is given: a .gguf file is a
// llama-family model (model/llama.h); a folder with config.json is an HF checkpoint of the DSA
// family (model/dsa_family/). Tools load every model through it.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/device.h"
#include "model/model.h"
#include "model/pattern_conventions.h"

namespace ic {

struct LoadOptions {
  Device device = Device::CPU;
  bool mtp = false;  // load the checkpoint's MTP/NextN layer where it has one (always F)
  // A DSA checkpoint's IndexCache pattern chosen by the caller for a model of n layers (nullopt:
  // the one its config.json names): only that pattern's F layers' indexers are loaded.
  std::function<std::optional<LayerPattern>(int64_t n_layers)> pattern;
  PatternRule rule = PatternRule::HF;  // how config.json's IndexCache knobs are read
  bool indexer_fp8 = false;  // the DSA family's GPU indexer in fp8 (FamilyOptions::indexer_fp8)
};

// Throws ic::Error naming the path when it is neither a GGUF file nor a folder with config.json.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt = {});

// A DSA-family model with random weights (--random-weights): `spec` is a preset name or a
// config.json path (model/dsa_family/presets.h), `layers` > 0 truncates it, `seed` fixes the
// weights. The pattern callback and device of `opt` apply; it has no tokenizer.
std::unique_ptr<Model> load_random_model(const std::string& spec, uint64_t seed, int64_t layers,
                                         const LoadOptions& opt = {});

// True when `path` names an HF model folder (a directory holding config.json).
bool is_hf_folder(const std::string& path);

}  // namespace ic
