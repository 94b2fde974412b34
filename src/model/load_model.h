#pragma once
// One entry point that picks the architecture from what it is given: a .gguf file is a
// llama-family model (model/llama.h); a folder with config.json is an HF checkpoint of the DSA
// family (model/dsa_family/). Tools load every model through it.
#include <memory>
#include <string>

#include "core/device.h"
#include "model/model.h"

namespace ic {

struct LoadOptions {
  Device device = Device::CPU;
  bool mtp = false;  // load the checkpoint's MTP/NextN layer where it has one (always F)
};

// Throws ic::Error naming the path when it is neither a GGUF file nor a folder with config.json.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt = {});

// True when `path` names an HF model folder (a directory holding config.json).
bool is_hf_folder(const std::string& path);

}  // namespace ic
