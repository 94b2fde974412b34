#pragma once
// Chat prompts exactly as the models' own chat templates render them. The engine does not run
// Jinja: each format below is written out by hand, and tests check it against jinja2 renderings
// of the real templates (tests/data/tokenizer_chat_vectors.json, tests/data/chat/).
//
//   chatml         SmolLM2-Instruct (GGUF tokenizer.chat_template)
//   deepseek-v3    DeepSeek-V3-0324's Jinja template
//   deepseek-v3.1  DeepSeek-V3.1 / V3.1-Terminus / V3.2-Exp's Jinja template (thinking flag)
//   deepseek-v3.2  DeepSeek-V3.2's Python encoding (encoding/encoding_dsv32.py, no Jinja)
//   glm4.5         GLM-4.5 / GLM-4.6's Jinja template
//   glm4           GLM-4.7 / GLM-4.7-Flash's Jinja template
// Messages are text only (no tool calls, tool schemas, reasoning_content or multimodal parts).
// Which format a model uses is detected from its template text by signature strings
// (detect_chat_format); a template that matches none is an ic::Error, never a guess.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ic {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ... (written as given)
  std::string content;
};

// The system message SmolLM2's template inserts when the first message is not "system".
inline constexpr std::string_view kSmolLM2DefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// "<|im_start|>{role}\n{content}<|im_end|>\n" per message, preceded by the default system
// message when messages[0].role != "system" (nothing at all for no messages), followed by
// "<|im_start|>assistant\n" when add_generation_prompt. Encode the result with parse_special.
std::string apply_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt);

enum class ChatFormat { chatml, deepseek_v3, deepseek_v31, deepseek_v32, glm45, glm4 };

// "chatml", "deepseek-v3", "deepseek-v3.1", "deepseek-v3.2", "glm4.5", "glm4".
std::string_view chat_format_name(ChatFormat f);
// The format of a name above; an ic::Error listing the names otherwise.
ChatFormat parse_chat_format(std::string_view name);
// Every format's name, comma separated (for help texts and errors).
std::string chat_format_names();

struct ChatOptions {
  bool add_generation_prompt = true;
  // The templates' thinking switch (enable_thinking; DeepSeek-V3.1's `thinking`; V3.2's
  // thinking_mode). nullopt: the template's own default, i.e. the variable left undefined:
  // V3.1 does not think, GLM thinks; V3.2's encoder has no default, and "chat" is used as
  // V3.1 and V3.2-Exp do. chatml and deepseek-v3 have no switch and ignore it.
  std::optional<bool> thinking;
};

// The prompt text; encode it with parse_special and without adding BOS (the DeepSeek formats
// write BOS themselves; GLM writes "[gMASK]<sop>"). Throws ic::Error where the reference itself
// raises (deepseek-v3.2: thinking mode with an assistant message after the last user message,
// a "developer" message without content, a "tool" message, an unknown role).
std::string apply_chat_format(ChatFormat f, std::span<const ChatMessage> messages, const ChatOptions& opt = {});

// The text of the tokens that end an assistant turn in this format (what generation stops on),
// besides the tokenizer's EOS.
std::vector<std::string> chat_stop_texts(ChatFormat f);

// The format a chat template's source text renders, recognised by signature strings. source
// names the template in errors (a file path, "GGUF tokenizer.chat_template"). Throws ic::Error
// for an empty template or one that matches no known format. Never crashes on any input.
ChatFormat detect_chat_format(std::string_view chat_template, std::string_view source);

}  // namespace ic
