// GLM-4.5/4.6 and GLM-4.7 chat prompts, for text messages, as their Jinja templates render them
// under transformers (trim_blocks, lstrip_blocks). The templates' str methods are Python's, so
// strip() here strips what Python's str.isspace() calls whitespace.
#include <string_view>

#include "io/chat_render.h"

namespace ic::chat {
namespace {

// The length of the UTF-8 whitespace character (Python str.isspace) starting at s[i], else 0.
size_t space_at(std::string_view s, size_t i) {
  const auto u = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const size_t left = s.size() - i;
  const unsigned char c = u(0);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  if (c == 0xc2 && left >= 2 && (u(1) == 0x85 || u(1) == 0xa0)) return 2;  // U+0085, U+00A0
  if (left < 3) return 0;
  if (c == 0xe1 && u(1) == 0x9a && u(2) == 0x80) return 3;                 // U+1680
  if (c == 0xe2 && u(1) == 0x80 && (u(2) <= 0x8a || u(2) == 0xa8 || u(2) == 0xa9 || u(2) == 0xaf))
    return u(2) >= 0x80 ? 3 : 0;                                           // U+2000-200A, 2028, 2029, 202F
  if (c == 0xe2 && u(1) == 0x81 && u(2) == 0x9f) return 3;                 // U+205F
  if (c == 0xe3 && u(1) == 0x80 && u(2) == 0x80) return 3;                 // U+3000
  return 0;
}

// The length of the whitespace character ending at s[end-1], else 0.
size_t space_before(std::string_view s, size_t end) {
  for (size_t n = 1; n <= 3 && n <= end; ++n)
    if (space_at(s, end - n) == n) return n;
  return 0;
}

std::string_view py_strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e) {
    const size_t n = space_at(s, b);
    if (n == 0 || b + n > e) break;
    b += n;
  }
  while (e > b) {
    const size_t n = space_before(s, e);
    if (n == 0 || e - n < b) break;
    e -= n;
  }
  return s.substr(b, e - b);
}

std::string_view strip_newlines_left(std::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
std::string_view strip_newlines_right(std::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

// An assistant message's content, split as the templates do when it holds "</think>":
// reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
// content   = content.split('</think>')[-1].lstrip('\n')
struct Split {
  std::string_view reasoning, content;
};
Split split_reasoning(std::string_view c) {
  const size_t first = c.find("</think>");
  if (first == std::string_view::npos) return {{}, c};
  std::string_view before = strip_newlines_right(c.substr(0, first));
  const size_t open = before.rfind("<think>");
  if (open != std::string_view::npos) before = before.substr(open + 7);
  const size_t last = c.rfind("</think>");
  return {strip_newlines_left(before), strip_newlines_left(c.substr(last + 8))};
}

long last_user_index(std::span<const ChatMessage> ms) {
  long last = -1;
  for (size_t i = 0; i < ms.size(); ++i)
    if (ms[i].role == "user") last = static_cast<long>(i);
  return last;
}

bool ends_with(std::string_view s, std::string_view t) { return s.size() >= t.size() && s.substr(s.size() - t.size()) == t; }

// The templates' tool branch for string content: one <|observation|> for a run of tool results.
void tool_turn(std::string& out, std::span<const ChatMessage> ms, size_t i, std::string_view open, std::string_view close) {
  if (i == 0 || ms[i - 1].role != "tool") out += "<|observation|>";
  out += open;
  out += ms[i].content;
  out += close;
}

}  // namespace

std::string render_glm45(std::span<const ChatMessage> ms, bool add_generation_prompt, std::optional<bool> enable_thinking) {
  const bool no_think = enable_thinking.has_value() && !*enable_thinking;
  const long last_user = last_user_index(ms);
  std::string out = "[gMASK]<sop>";
  for (size_t i = 0; i < ms.size(); ++i) {
    const ChatMessage& m = ms[i];
    if (m.role == "user") {
      out += "<|user|>\n";
      out += m.content;
      if (no_think && !ends_with(m.content, "/nothink")) out += "/nothink";
    } else if (m.role == "assistant") {
      const Split s = split_reasoning(m.content);
      out += "<|assistant|>";
      const std::string_view r = py_strip(s.reasoning);
      if (static_cast<long>(i) > last_user && !s.reasoning.empty()) {
        out += "\n<think>";
        out += r;
        out += "</think>";
      } else {
        out += "\n<think></think>";
      }
      const std::string_view c = py_strip(s.content);
      if (!c.empty()) {
        out += '\n';
        out += c;
      }
    } else if (m.role == "tool") {
      tool_turn(out, ms, i, "\n<tool_response>\n", "\n</tool_response>");
    } else if (m.role == "system") {
      out += "<|system|>\n";
      out += m.content;
    }
  }
  if (add_generation_prompt) {
    out += "<|assistant|>";
    if (no_think) out += "\n<think></think>";
  }
  return out;
}

std::string render_glm47(std::span<const ChatMessage> ms, bool add_generation_prompt, std::optional<bool> enable_thinking) {
  const bool no_think = enable_thinking.has_value() && !*enable_thinking;
  const long last_user = last_user_index(ms);
  std::string out = "[gMASK]<sop>";
  for (size_t i = 0; i < ms.size(); ++i) {
    const ChatMessage& m = ms[i];
    if (m.role == "user") {
      out += "<|user|>";
      out += m.content;
    } else if (m.role == "assistant") {
      const Split s = split_reasoning(m.content);
      out += "<|assistant|>";
      // clear_thinking left undefined: past turns' reasoning is dropped.
      if (static_cast<long>(i) > last_user && !s.reasoning.empty()) {
        out += "<think>";
        out += py_strip(s.reasoning);
        out += "</think>";
      } else {
        out += "</think>";
      }
      out += py_strip(s.content);
    } else if (m.role == "tool") {
      tool_turn(out, ms, i, "<tool_response>", "</tool_response>");
    } else if (m.role == "system") {
      out += "<|system|>";
      out += m.content;
    }
  }
  if (add_generation_prompt) out += no_think ? "<|assistant|></think>" : "<|assistant|><think>";
  return out;
}

}  // namespace ic::chat
