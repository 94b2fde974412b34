// DeepSeek-V3 family chat prompts: V3-0324's and V3.1's Jinja templates and V3.2's Python
// encoder, for text messages. Each step names the template construct it reproduces.
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/chat_render.h"

namespace ic::chat {
namespace {

constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";

// Both Jinja templates first join every system message with "\n\n" (ns.system_prompt) and write
// it right after BOS, wherever the messages stand.
std::string joined_system(std::span<const ChatMessage> ms) {
  std::string out;
  bool first = true;
  for (const ChatMessage& m : ms) {
    if (m.role != "system") continue;
    if (!first) out += "\n\n";
    out += m.content;
    first = false;
  }
  return out;
}

}  // namespace

std::string render_deepseek_v3(std::span<const ChatMessage> ms, bool add_generation_prompt) {
  std::string out(kBos);
  out += joined_system(ms);
  bool is_tool = false, is_output_first = true, is_last_user = false;
  for (const ChatMessage& m : ms) {
    if (m.role == "user") {
      is_tool = false;
      is_last_user = true;
      out += kUser;
      out += m.content;
      out += kAssistant;
    } else if (m.role == "assistant") {
      is_last_user = false;
      if (is_tool) out += "<｜tool▁outputs▁end｜>";
      is_tool = false;
      out += m.content;
      out += kEos;
    } else if (m.role == "tool") {
      is_last_user = false;
      is_tool = true;
      out += is_output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" : "\n<｜tool▁output▁begin｜>";
      is_output_first = false;  // reset only by an assistant turn with tool_calls
      out += m.content;
      out += "<｜tool▁output▁end｜>";
    }  // other roles (and system, written above) render nothing here
  }
  if (is_tool) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !is_last_user && !is_tool) out += kAssistant;
  return out;
}

std::string render_deepseek_v31(std::span<const ChatMessage> ms, bool add_generation_prompt, bool thinking) {
  std::string out(kBos);
  out += joined_system(ms);
  bool is_tool = false, is_last_user = false;
  for (const ChatMessage& m : ms) {
    if (m.role == "user") {
      is_tool = false;
      is_last_user = true;
      out += kUser;
      out += m.content;
    } else if (m.role == "assistant") {
      // A message without a prefix flag closes the (empty) thinking block.
      if (is_last_user) out += "<｜Assistant｜></think>";
      is_last_user = false;
      if (is_tool) {
        out += m.content;
        is_tool = false;
      } else {
        // content.split('</think>', 1)[1]: what follows the first "</think>", if any.
        const size_t at = m.content.find("</think>");
        out += at == std::string::npos ? std::string_view(m.content) : std::string_view(m.content).substr(at + 8);
      }
      out += kEos;
    } else if (m.role == "tool") {
      is_last_user = false;
      is_tool = true;
      out += "<｜tool▁output▁begin｜>";
      out += m.content;
      out += "<｜tool▁output▁end｜>";
    }
  }
  if (add_generation_prompt && is_last_user && !is_tool) {
    out += kAssistant;
    out += thinking ? "<think>" : "</think>";
  }
  return out;
}

namespace {

// find_last_user_index: the last "user" or "developer" message, -1 for none.
long last_user_index(std::span<const ChatMessage* const> ms) {
  for (size_t i = ms.size(); i-- > 0;)
    if (ms[i]->role == "user" || ms[i]->role == "developer") return static_cast<long>(i);
  return -1;
}

// render_message for one text message at index i of ms.
void render_v32_message(std::string& out, std::span<const ChatMessage* const> ms, size_t i, bool thinking) {
  const ChatMessage& m = *ms[i];
  const long last_user = last_user_index(ms);
  const long at = static_cast<long>(i);
  const auto user_turn = [&](std::string_view content) {
    out += kUser;
    out += content;
    out += kAssistant;
    out += at == last_user && thinking ? "<think>" : "</think>";
  };
  if (m.role == "system") {
    out += m.content;
  } else if (m.role == "developer") {
    IC_CHECK(!m.content.empty(), "deepseek-v3.2 chat: message {} (developer) has no content", i);
    user_turn("\n\n# The user's message is: " + m.content);
  } else if (m.role == "user") {
    user_turn(m.content);
  } else if (m.role == "assistant") {
    if (thinking && at > last_user)  // the reference needs reasoning_content (or tool calls) here
      fail("deepseek-v3.2 chat: in thinking mode, assistant message {} after the last user message needs "
           "reasoning_content, which this renderer does not take", i);
    out += m.content;
    out += kEos;
  } else if (m.role == "tool") {
    fail("deepseek-v3.2 chat: message {} is a tool result, but no assistant message has tool calls", i);
  } else {
    fail("deepseek-v3.2 chat: message {} has the unknown role '{}'", i, m.role);
  }
}

}  // namespace

std::string render_deepseek_v32(std::span<const ChatMessage> ms, bool thinking) {
  std::string out(kBos);
  // drop_thinking_messages (thinking mode): before the last user message only user, system,
  // tool and assistant messages stay (assistant ones without reasoning_content, which text
  // messages never have). The loop below still runs over the original count, so a dropped
  // message makes the last index out of range, an error in the reference too.
  std::vector<const ChatMessage*> kept;
  for (const ChatMessage& m : ms) kept.push_back(&m);
  if (thinking) {
    const long last_user = last_user_index(kept);
    std::vector<const ChatMessage*> k;
    for (size_t i = 0; i < kept.size(); ++i) {
      const std::string& r = kept[i]->role;
      if (r == "user" || r == "system" || r == "tool" || r == "assistant" || static_cast<long>(i) >= last_user)
        k.push_back(kept[i]);
    }
    kept = std::move(k);
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    IC_CHECK(i < kept.size(), "deepseek-v3.2 chat: index {} out of range for messages list of length {} (thinking "
             "mode drops messages of other roles before the last user message)", i, kept.size());
    render_v32_message(out, kept, i, thinking);
  }
  return out;
}

}  // namespace ic::chat
