// indexcache generate: text from a prompt, optionally wrapped in the chat template.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
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
  float temp = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool json = false;
};

void run(const GenerateArgs& a) {
  auto model = load_model(a.model, a.json);
  const Tokenizer& tok = model->tokenizer();
  std::string text = a.prompt;
  GenerateOptions opt;
  opt.max_new_tokens = a.n;
  opt.sampler = {a.temp, a.top_k, a.top_p, a.seed};
  if (tok.eos_id() >= 0) opt.stop_tokens.push_back(tok.eos_id());
  if (a.chat) {
    std::vector<ChatMessage> msgs;
    if (!a.system.empty()) msgs.push_back({"system", a.system});
    msgs.push_back({"user", a.prompt});
    text = apply_chatml(msgs, true);
    const int32_t end = tok.token_id("<|im_end|>");
    if (end >= 0) opt.stop_tokens.push_back(end);
  }
  std::vector<int32_t> ids = tok.encode(text, true);
  if (tok.add_bos() && tok.bos_id() >= 0) ids.insert(ids.begin(), tok.bos_id());
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
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template (ChatML)");
  cmd->add_option("--system", a->system, "System message for --chat (default: the template's)");
  cmd->add_option("--temp", a->temp, "Sampling temperature; 0 is greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling mass")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("-s,--seed", a->seed, "Random seed");
  cmd->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
