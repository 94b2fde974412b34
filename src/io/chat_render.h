#pragma once
// The renderers behind apply_chat_format (io/chat_template.h), one per template family.
#include <optional>
#include <span>
#include <string>

#include "io/chat_template.h"

namespace ic::chat {

// DeepSeek-V3-0324's template (no thinking switch).
std::string render_deepseek_v3(std::span<const ChatMessage> ms, bool add_generation_prompt);
// DeepSeek-V3.1's template; thinking: its `thinking` variable (false when undefined).
std::string render_deepseek_v31(std::span<const ChatMessage> ms, bool add_generation_prompt, bool thinking);
// DeepSeek-V3.2's encode_messages(ms, thinking_mode, drop_thinking=True, add_default_bos_token=True).
// It has no generation-prompt switch: every user turn already ends in "<｜Assistant｜>" and its
// thinking marker.
std::string render_deepseek_v32(std::span<const ChatMessage> ms, bool thinking);
// GLM-4.5 / 4.6; enable_thinking: nullopt when undefined.
std::string render_glm45(std::span<const ChatMessage> ms, bool add_generation_prompt, std::optional<bool> enable_thinking);
// GLM-4.7; enable_thinking: nullopt when undefined.
std::string render_glm47(std::span<const ChatMessage> ms, bool add_generation_prompt, std::optional<bool> enable_thinking);

}  // namespace ic::chat
