#include "model/load_model.h"

#include <filesystem>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/dsa_family/model.h"
#include "model/dsa_family/presets.h"
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
    fo.indexer_fp8 = opt.indexer_fp8;
    if (opt.pattern) {
      const hf::Config config = hf::Config::load((std::filesystem::path(path) / "config.json").string());
      fo.pattern = opt.pattern(config.get_int("num_hidden_layers"));
    }
    return load_dsa_family(path, opt.device, fo);
  }
  IC_CHECK(!opt.indexer_fp8, "{}: the fp8 indexer option applies to the DSA family (HF model folders)", path);
  IC_CHECK(!opt.mtp, "{}: --mtp applies to DSA checkpoints with MTP layers; a GGUF model has none", path);
  return LlamaModel::load(path, opt.device);
}

std::unique_ptr<Model> load_random_model(const std::string& spec, uint64_t seed, int64_t layers,
                                         const LoadOptions& opt) {
  const MlaMoeConfig c = dsa::random_model_config(spec, layers);
  FamilyOptions fo;
  fo.mtp = opt.mtp;
  fo.indexer_fp8 = opt.indexer_fp8;
  if (opt.pattern) fo.pattern = opt.pattern(c.n_layers);
  return MlaMoeModel::random(c, seed, opt.device, "random:" + spec, fo);
}

}  // namespace ic
