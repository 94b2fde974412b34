// libFuzzer target for the chat prompt path: tokenizer_config.json's chat_template field (read
// by tokenizer_data_from_json, io/tokenizer_json.h: a string or a list of named templates) and
// the ChatML renderer apply_chatml (io/chat_template.h) that `indexcache generate --chat` uses.
// The engine does not run Jinja, so the template string is only read and kept, never executed.
//
// An input is tokenizer_config.json's text, a NUL byte, then a conversation: a flag byte (bit 0:
// add the generation prompt) and messages separated by 0x1E, each "role 0x1F content". The
// config goes with a fixed small ChatML tokenizer.json (the SmolLM seed of fuzz_tokenizer_json);
// it must load or throw ic::Error. The conversation is rendered and checked against the
// format's definition, then encoded with parse_special and decoded: the bytes must come back,
// and there must be a <|im_start|> token per turn.
//
// Seeds: fuzz/corpus/chat_template/ holds the repository's tokenizer_config.json files (with
// SmolLM2's ChatML template, GLM's and DeepSeek-V3's) each followed by a small conversation.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "io/tokenizer_json.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// The fixed tokenizer.json: a small byte-level ChatML vocabulary committed beside this file.
std::string g_tokenizer_json;
std::unique_ptr<ic::Tokenizer> g_chatml;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<ic::ChatMessage> messages_of(std::string_view s) {
  std::vector<ic::ChatMessage> out;
  while (!s.empty() && out.size() < 64) {
    const size_t end = s.find('\x1e');
    const std::string_view m = s.substr(0, end);
    const size_t sep = m.find('\x1f');
    out.push_back({std::string(m.substr(0, sep)), sep == std::string_view::npos ? "" : std::string(m.substr(sep + 1))});
    if (end == std::string_view::npos) break;
    s.remove_prefix(end + 1);
  }
  return out;
}

// The ChatML text by its definition, written out independently of apply_chatml.
std::string expected_chatml(const std::vector<ic::ChatMessage>& ms, bool gen) {
  std::string e;
  if (!ms.empty() && ms[0].role != "system")
    e += "<|im_start|>system\n" + std::string(ic::kSmolLM2DefaultSystem) + "<|im_end|>\n";
  for (const ic::ChatMessage& m : ms) e += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return gen ? e + "<|im_start|>assistant\n" : e;
}

std::string without_untokenized(const ic::Tokenizer& tk, std::string_view s) {
  std::string out;
  for (const char c : s)
    if (tk.byte_has_token(static_cast<uint8_t>(c))) out += c;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // IC_FUZZ_CHATML_TOKENIZER names it where the source tree is not at the path it was built from
  // (scripts/device-fuzz.sh on another machine).
  const char* env = std::getenv("IC_FUZZ_CHATML_TOKENIZER");
  const std::filesystem::path seed =
      env && *env ? std::filesystem::path(env)
                  : std::filesystem::path(__FILE__).parent_path() / "corpus" / "tokenizer_json" / "smollm.json";
  g_tokenizer_json = read_all(seed);
  if (g_tokenizer_json.empty()) {
    std::fprintf(stderr, "fuzz_chat_template: cannot read %s\n", seed.c_str());
    std::abort();
  }
  g_chatml = std::make_unique<ic::Tokenizer>(ic::tokenizer_data_from_json(g_tokenizer_json, ""));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string config(in.substr(0, nul));
  try {
    const ic::TokenizerData d = ic::tokenizer_data_from_json(g_tokenizer_json, config);
    volatile size_t sink = d.chat_template.size();
    (void)sink;
  } catch (const ic::Error&) {
  }
  if (nul == std::string_view::npos || nul + 1 >= in.size()) return 0;
  const bool gen = (static_cast<uint8_t>(in[nul + 1]) & 1) != 0;
  const std::vector<ic::ChatMessage> ms = messages_of(in.substr(nul + 2));
  const std::string text = ic::apply_chatml(ms, gen);
  check(text == expected_chatml(ms, gen));
  const ic::Tokenizer& tk = *g_chatml;
  const std::vector<int32_t> ids = tk.encode(text, true);
  check(without_untokenized(tk, tk.decode(ids)) == without_untokenized(tk, text));
  const int32_t start = tk.token_id("<|im_start|>");
  size_t starts = 0;
  for (const int32_t id : ids) starts += id == start;
  const size_t turns = ms.size() + (!ms.empty() && ms[0].role != "system") + gen;
  check(starts >= turns);
  return 0;
}
