// indexcache generate: text from a prompt, optionally wrapped in the chat template.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "io/chat_folder.h"
#include "io/chat_template.h"
#include "runtime/generate.h"

namespace ic::cli {

namespace {
struct GenerateArgs {
  ModelOptions model;
  std::string prompt;
  std::string system;
  int n = 64;
  bool chat = false;
  std::string chat_format;  // --chat-format; "": the model's own template
  std::string thinking;     // --thinking on|off; "": the template's default
  float temp = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool json = false;
};

// The chat format: --chat-format, else the one the model's template renders (an HF folder's
// tokenizer_config.json / chat_template.jinja, a GGUF's tokenizer.chat_template).
ChatFormat chat_format_for(const GenerateArgs& a, const Tokenizer& tok) {
  if (!a.chat_format.empty()) return parse_chat_format(a.chat_format);
  const std::string path = resolve_model_path(a.model.model);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return chat_format_of_folder(path).format;
  const std::string& t = tok.data().chat_template;
  IC_CHECK(!t.empty(), "{}: the model has no chat template (tokenizer.chat_template); pass --chat-format", path);
  return detect_chat_format(t, path + " (tokenizer.chat_template)");
}

// The prompt wrapped in chat format f; adds the format's stop tokens to opt.
std::string chat_prompt(const GenerateArgs& a, ChatFormat f, const Tokenizer& tok, GenerateOptions& opt) {
  std::vector<ChatMessage> msgs;
  if (!a.system.empty()) msgs.push_back({"system", a.system});
  msgs.push_back({"user", a.prompt});
  ChatOptions co;
  if (!a.thinking.empty()) co.thinking = a.thinking == "on";
  for (const std::string& s : chat_stop_texts(f)) {
    const int32_t id = tok.token_id(s);
    if (id >= 0) opt.stop_tokens.push_back(id);
  }
  if (!a.json) std::fprintf(stderr, "chat format: %s\n", std::string(chat_format_name(f)).c_str());
  return apply_chat_format(f, msgs, co);
}

void run(const GenerateArgs& a) {
  auto model = load_model(a.model, a.json);
  const Tokenizer& tok = model->tokenizer();
  std::string text = a.prompt;
  GenerateOptions opt;
  opt.max_new_tokens = a.n;
  opt.sampler = {a.temp, a.top_k, a.top_p, a.seed};
  if (tok.eos_id() >= 0) opt.stop_tokens.push_back(tok.eos_id());
  // The DeepSeek formats write BOS themselves (transformers then encodes without special tokens).
  bool writes_bos = false;
  nlohmann::json format_name = nullptr;
  if (a.chat) {
    const ChatFormat f = chat_format_for(a, tok);
    format_name = std::string(chat_format_name(f));
    writes_bos = f == ChatFormat::deepseek_v3 || f == ChatFormat::deepseek_v31 || f == ChatFormat::deepseek_v32;
    text = chat_prompt(a, f, tok, opt);
  }
  std::vector<int32_t> ids = tok.encode(text, true);
  if (tok.add_bos() && tok.bos_id() >= 0 && !writes_bos) ids.insert(ids.begin(), tok.bos_id());
  if (!a.json) {
    std::fputs(a.chat ? "" : a.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  const GenerateResult r = generate(*model, ids, opt, [&](int32_t, const std::string& piece) {
    if (a.json) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  if (a.json) {
    nlohmann::json j = {{"prompt", a.prompt},
                        {"chat_format", format_name},
                        {"prompt_tokens", r.prompt_tokens.size()},
                        {"tokens", r.tokens},
                        {"text", r.text},
                        {"stopped", r.stopped},
                        {"prefill_tokens_per_s", r.prefill_tokens_per_s()},
                        {"decode_tokens_per_s", r.decode_tokens_per_s()}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("\n");
  std::fprintf(stderr, "prompt: %zu tokens, %.1f tokens/s | generated: %zu tokens, %.1f tokens/s%s\n",
               r.prompt_tokens.size(), r.prefill_tokens_per_s(), r.tokens.size(), r.decode_tokens_per_s(),
               r.stopped ? " (stop token)" : "");
}
}  // namespace

void register_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  add_model_options(cmd, a->model);
  cmd->add_option("-p,--prompt", a->prompt, "Prompt text")->required();
  cmd->add_option("-n,--n-predict", a->n, "Tokens to generate")->check(CLI::NonNegativeNumber);
  CLI::Option* chat = cmd->add_flag("--chat", a->chat,
                "Wrap the prompt (and --system) in the model's chat format, detected from its chat template "
                "(an HF folder's tokenizer_config.json or chat_template.jinja, a GGUF's tokenizer.chat_template; "
                "DeepSeek-V3.2 folders use its Python encoding); an unknown template is an error");
  cmd->add_option("--chat-format", a->chat_format,
                  "With --chat: this format instead of the detected one: " + chat_format_names())
      ->needs(chat);
  cmd->add_option("--thinking", a->thinking,
                  "With --chat: the template's thinking switch (enable_thinking / thinking_mode); "
                  "default: the template's own (DeepSeek: off, GLM: on)")
      ->check(CLI::IsMember({"on", "off"}))
      ->needs(chat);
  cmd->add_option("--system", a->system, "System message for --chat (default: the template's)");
  cmd->add_option("--temp", a->temp, "Sampling temperature; 0 is greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling mass")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("-s,--seed", a->seed, "Random seed");
  cmd->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
