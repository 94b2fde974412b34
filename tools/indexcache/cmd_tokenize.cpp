// indexcache tokenize: token ids of a text, for checking against other tokenizers.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"
#include <filesystem>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer_json.h"
#include "model/load_model.h"

namespace ic::cli {

namespace {
struct TokenizeArgs {
  std::string model;
  std::string prompt;
  bool json = false;
  bool no_special = false;
};

void run(const TokenizeArgs& a) {
  const std::string path = resolve_model_path(a.model);
  // Only the tokenizer is needed: read the GGUF's metadata or the folder's tokenizer files, load
  // no weights.
  const auto data = [&] {
    if (!is_hf_folder(path)) return tokenizer_data_from_gguf(gguf::File::open(path));
    const std::filesystem::path dir(path);
    const std::filesystem::path config = dir / "tokenizer_config.json";
    return tokenizer_data_from_json_files((dir / "tokenizer.json").string(),
                                          std::filesystem::exists(config) ? config.string() : std::string());
  }();
  const Tokenizer tok(data);
  const std::vector<int32_t> ids = tok.encode(a.prompt, !a.no_special);
  if (a.json) {
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
    return;
  }
  for (int32_t id : ids) {
    const std::string piece = tok.piece(id);
    std::printf("%6d -> '%s'\n", id, piece.c_str());
  }
}
}  // namespace

void register_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("-m,--model", a->model, "GGUF model file or HF model folder");
  cmd->add_option("-p,--prompt", a->prompt, "Text to tokenize")->required();
  cmd->add_flag("--json", a->json, "Print the ids as a JSON array");
  cmd->add_flag("--no-special", a->no_special, "Treat special-token text as plain text");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
