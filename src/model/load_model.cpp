#include "model/load_model.h"

#include <filesystem>

#include "core/error.h"
#include "model/llama.h"

namespace ic {

bool is_hf_folder(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) && std::filesystem::exists(std::filesystem::path(path) / "config.json", ec);
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    IC_CHECK(is_hf_folder(path), "{}: a model folder needs a config.json (an HF checkpoint)", path);
    fail("{}: HF model folders (the DSA family) are not loadable in this build yet", path);
  }
  return LlamaModel::load(path, opt.device);
}

}  // namespace ic
