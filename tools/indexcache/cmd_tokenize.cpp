// indexcache tokenize: token ids of a text, for checking against other tokenizers.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"
#include "io/gguf.h"
#include "io/tokenizer.h"

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
  // Only the tokenizer is needed: read the metadata, load no weights.
  const gguf::File f = gguf::File::open(path);
  const Tokenizer tok(tokenizer_data_from_gguf(f));
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
  cmd->add_option("-m,--model", a->model, "GGUF model file");
  cmd->add_option("-p,--prompt", a->prompt, "Text to tokenize")->required();
  cmd->add_flag("--json", a->json, "Print the ids as a JSON array");
  cmd->add_flag("--no-special", a->no_special, "Treat special-token text as plain text");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
