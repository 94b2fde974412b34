#include "io/chat_template.h"

namespace ic {
namespace {

void append_turn(std::string& out, std::string_view role, std::string_view content) {
  out += "<|im_start|>";
  out += role;
  out += '\n';
  out += content;
  out += "<|im_end|>\n";
}

}  // namespace

std::string apply_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out;
  // The template tests loop.first inside the loop, so an empty conversation gets no system turn.
  if (!messages.empty() && messages[0].role != "system") append_turn(out, "system", kSmolLM2DefaultSystem);
  for (const ChatMessage& m : messages) append_turn(out, m.role, m.content);
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace ic
