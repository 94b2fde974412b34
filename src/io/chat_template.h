#pragma once
// ChatML prompts exactly as SmolLM2-Instruct's Jinja chat template (tokenizer.chat_template)
// renders them. The engine does not run Jinja; tests check this against the template itself.
#include <span>
#include <string>
#include <string_view>

namespace ic {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ... (written as given)
  std::string content;
};

// The system message SmolLM2's template inserts when the first message is not "system".
inline constexpr std::string_view kSmolLM2DefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// "<|im_start|>{role}\n{content}<|im_end|>\n" per message, preceded by the default system
// message when messages[0].role != "system" (nothing at all for no messages), followed by
// "<|im_start|>assistant\n" when add_generation_prompt. Encode the result with parse_special.
std::string apply_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt);

}  // namespace ic
