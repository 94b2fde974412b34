#include "model/load_model.h"

#include <filesystem>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/dsa_family/model.h"
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
    FamilyOptions fo;
    fo.mtp = opt.mtp;
    fo.rule = opt.rule;
    if (opt.pattern) {
      const hf::Config config = hf::Config::load((std::filesystem::path(path) / "config.json").string());
      fo.pattern = opt.pattern(config.get_int("num_hidden_layers"));
    }
    return load_dsa_family(path, opt.device, fo);
  }
  IC_CHECK(!opt.mtp, "{}: --mtp applies to DSA checkpoints with MTP layers; a GGUF model has none", path);
  return LlamaModel::load(path, opt.device);
}

}  // namespace ic
