#pragma once
// The configs of --random-weights runs: a named preset (models/presets/NAME.json, the real
// models' shapes: glm47-flash-dsa, deepseek-v32, glm5) or any config.json path.
#include <cstdint>
#include <string>
#include <vector>

#include "model/dsa_family/config.h"

namespace ic::dsa {

// The folder of the named presets: $IC_PRESET_DIR, else the source tree's models/presets.
std::string preset_dir();
// Names of the presets found there, sorted.
std::vector<std::string> preset_names();
// `spec` as a config path: an existing file as it is, else preset_dir()/spec.json; throws
// ic::Error listing the presets when neither exists.
std::string preset_path(const std::string& spec);
// The config of `spec`; layers > 0 keeps only the first `layers` layers (a truncated model for
// quick checks; at most the config's num_hidden_layers). MTP layers are dropped.
MlaMoeConfig random_model_config(const std::string& spec, int64_t layers = 0);

}  // namespace ic::dsa
