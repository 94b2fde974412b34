#include "model/dsa_family/presets.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "io/hf_folder.h"

#ifndef IC_PRESET_DIR
#define IC_PRESET_DIR "models/presets"
#endif

namespace ic::dsa {

namespace fs = std::filesystem;

std::string preset_dir() {
  const char* env = std::getenv("IC_PRESET_DIR");
  return env && *env ? env : IC_PRESET_DIR;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(preset_dir(), ec))
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string preset_path(const std::string& spec) {
  std::error_code ec;
  if (fs::is_regular_file(spec, ec)) return spec;
  const fs::path p = fs::path(preset_dir()) / (spec + ".json");
  if (fs::is_regular_file(p, ec)) return p.string();
  std::string names;
  for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  fail("--random-weights {}: neither a config.json file nor a preset in {} (presets: {})", spec, preset_dir(),
       names.empty() ? "none found" : names);
}

MlaMoeConfig random_model_config(const std::string& spec, int64_t layers) {
  MlaMoeConfig c = MlaMoeConfig::from_hf(hf::Config::load(preset_path(spec)));
  IC_CHECK(layers >= 0 && layers <= c.n_layers, "--layers {}: the config {} has {} layers", layers, spec, c.n_layers);
  if (layers > 0) {
    c.n_layers = layers;
    c.moe_layer.resize(static_cast<size_t>(layers));
  }
  c.n_mtp_layers = 0;
  return c;
}

}  // namespace ic::dsa
