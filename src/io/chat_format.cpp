// Chat format names, detection from a template's text, and dispatch to the renderers.
#include <array>
#include <fmt/format.h>

#include "core/error.h"
#include "io/chat_render.h"
#include "io/chat_template.h"

namespace ic {
namespace {

struct Named {
  ChatFormat format;
  std::string_view name;
};
constexpr std::array<Named, 6> kFormats = {{{ChatFormat::chatml, "chatml"},
                                            {ChatFormat::deepseek_v3, "deepseek-v3"},
                                            {ChatFormat::deepseek_v31, "deepseek-v3.1"},
                                            {ChatFormat::deepseek_v32, "deepseek-v3.2"},
                                            {ChatFormat::glm45, "glm4.5"},
                                            {ChatFormat::glm4, "glm4"}}};

bool has(std::string_view text, std::string_view what) { return text.find(what) != std::string_view::npos; }

// Signature strings: each is a piece of the real template's source that decides how the
// conversation is laid out, so that a template which renders differently does not match.
bool is_smollm2_chatml(std::string_view t) {
  return has(t, "<|im_start|>") && has(t, "<|im_end|>") && has(t, kSmolLM2DefaultSystem);
}
bool is_deepseek(std::string_view t) { return has(t, "<｜User｜>") && has(t, "<｜Assistant｜>"); }
bool is_deepseek_v31(std::string_view t) {
  return has(t, "is_last_user") && has(t, "not thinking") && has(t, "{{'<｜User｜>' + message['content']}}") &&
         has(t, "content.split('</think>', 1)[1]");
}
bool is_deepseek_v3_0324(std::string_view t) {
  return has(t, "is_last_user") && !has(t, "think") &&
         has(t, "{{'<｜User｜>' + message['content'] + '<｜Assistant｜>'}}");
}
bool is_glm(std::string_view t) { return has(t, "[gMASK]<sop>") && has(t, "<|assistant|>"); }
bool is_glm47(std::string_view t) {
  return has(t, "<|user|>{{ visible_text(m.content) }}") && has(t, "{{ '</think>' }}") &&
         has(t, "<|assistant|>{{- '</think>' if (enable_thinking is defined and not enable_thinking) else '<think>' -}}");
}
bool is_glm45(std::string_view t) {
  return has(t, "<|user|>\n{{ visible_text(m.content) }}") && has(t, "'/nothink'") &&
         has(t, "<|assistant|>{{- '\\n<think></think>' if (enable_thinking is defined and not enable_thinking) else '' -}}");
}

}  // namespace

std::string_view chat_format_name(ChatFormat f) {
  for (const Named& n : kFormats)
    if (n.format == f) return n.name;
  IC_ASSERT(false);
  return {};
}

std::string chat_format_names() {
  std::string out;
  for (const Named& n : kFormats) out += fmt::format("{}{}", out.empty() ? "" : ", ", n.name);
  return out;
}

ChatFormat parse_chat_format(std::string_view name) {
  for (const Named& n : kFormats)
    if (n.name == name) return n.format;
  fail("unknown chat format '{}' (known: {})", name, chat_format_names());
}

ChatFormat detect_chat_format(std::string_view t, std::string_view source) {
  IC_CHECK(!t.empty(), "{}: the chat template is empty", source);
  if (is_smollm2_chatml(t)) return ChatFormat::chatml;
  if (is_deepseek(t)) {
    if (is_deepseek_v31(t)) return ChatFormat::deepseek_v31;
    if (is_deepseek_v3_0324(t)) return ChatFormat::deepseek_v3;
    fail("{}: a DeepSeek chat template (<｜User｜>/<｜Assistant｜>) that is neither DeepSeek-V3-0324's nor V3.1's; "
         "pass a chat format explicitly (known: {})", source, chat_format_names());
  }
  if (is_glm(t)) {
    if (is_glm47(t)) return ChatFormat::glm4;
    if (is_glm45(t)) return ChatFormat::glm45;
    fail("{}: a GLM chat template ([gMASK]<sop>) that is neither GLM-4.7's nor GLM-4.5/4.6's; "
         "pass a chat format explicitly (known: {})", source, chat_format_names());
  }
  fail("{}: a chat template this build does not know ({} bytes, starting '{}'); pass a chat format explicitly (known: {})",
       source, t.size(), t.substr(0, std::min<size_t>(t.size(), 40)), chat_format_names());
}

std::string apply_chat_format(ChatFormat f, std::span<const ChatMessage> ms, const ChatOptions& o) {
  switch (f) {
    case ChatFormat::chatml:
      return apply_chatml(ms, o.add_generation_prompt);
    case ChatFormat::deepseek_v3:
      return chat::render_deepseek_v3(ms, o.add_generation_prompt);
    case ChatFormat::deepseek_v31:
      return chat::render_deepseek_v31(ms, o.add_generation_prompt, o.thinking.value_or(false));
    case ChatFormat::deepseek_v32:
      return chat::render_deepseek_v32(ms, o.thinking.value_or(false));
    case ChatFormat::glm45:
      return chat::render_glm45(ms, o.add_generation_prompt, o.thinking);
    case ChatFormat::glm4:
      return chat::render_glm47(ms, o.add_generation_prompt, o.thinking);
  }
  IC_ASSERT(false);
  return {};
}

std::vector<std::string> chat_stop_texts(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml:
      return {"<|im_end|>"};
    case ChatFormat::deepseek_v3:
    case ChatFormat::deepseek_v31:
    case ChatFormat::deepseek_v32:
      return {"<｜end▁of▁sentence｜>"};
    case ChatFormat::glm45:
    case ChatFormat::glm4:
      // generation_config.json's eos_token_id list: the next turn's markers end this one.
      return {"<|endoftext|>", "<|user|>", "<|observation|>"};
  }
  IC_ASSERT(false);
  return {};
}

}  // namespace ic
