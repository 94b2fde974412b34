// apply_chatml against jinja2 renderings of SmolLM2's own chat template
// (tests/data/tokenizer_chat_vectors.json, from scripts/make-tokenizer-vectors), and the DSA
// family's chat formats, their detection and the folder lookup.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "core/error.h"
#include "io/chat_folder.h"
#include "io/chat_template.h"
#include "io/tokenizer_json.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_util.h"

namespace ic {
namespace {

nlohmann::json chat_vectors() {
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/tokenizer_chat_vectors.json");
  if (!in) throw Error("tests/data/tokenizer_chat_vectors.json is missing");
  return nlohmann::json::parse(in);
}

TEST(ChatTemplate, MatchesJinjaRenderings) {
  const nlohmann::json j = chat_vectors();
  ASSERT_GE(j.at("cases").size(), 10u);
  for (const auto& c : j.at("cases")) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c.at("messages")) messages.push_back({m.at("role"), m.at("content")});
    const bool gen = c.at("add_generation_prompt");
    EXPECT_EQ(apply_chatml(messages, gen), c.at("text").get<std::string>()) << c.dump();
  }
}

TEST(ChatTemplate, Examples) {
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(apply_chatml(user, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "S"}, {"user", "U"}};
  EXPECT_EQ(apply_chatml(sys, false), "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
  EXPECT_EQ(apply_chatml({}, true), "<|im_start|>assistant\n");
}

// The vectors were rendered from this template; a model with another one needs another renderer.
TEST(ChatTemplate, ModelTemplateIsTheOneTested) {
  IC_TEST_MODEL_OR_SKIP(path);
  const TokenizerData d = tokenizer_data_from_gguf(gguf::File::open(path));
  EXPECT_EQ(d.chat_template, chat_vectors().at("chat_template").get<std::string>());
  const Tokenizer tok(d);
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  const std::vector<int32_t> ids = tok.encode(apply_chatml(user, true));
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|>
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);  // two <|im_end|>
  EXPECT_EQ(tok.decode(ids), apply_chatml(user, true));
}


// ---------------------------------------------------------------------------------------------
// The DSA family's formats against the reference renderings in tests/data/chat/chat_vectors.json
// (scripts/make-chat-vectors: jinja2 on the real Jinja templates, DeepSeek-V3.2's Python encoder).
namespace {

nlohmann::json family_vectors() {
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/chat/chat_vectors.json");
  if (!in) throw Error("tests/data/chat/chat_vectors.json is missing");
  return nlohmann::json::parse(in);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& c) {
  std::vector<ChatMessage> ms;
  for (const auto& m : c.at("messages")) ms.push_back({m.at("role"), m.at("content")});
  return ms;
}

ChatOptions options_of(const nlohmann::json& c) {
  ChatOptions o;
  o.add_generation_prompt = c.at("add_generation_prompt");
  if (!c.at("thinking").is_null()) o.thinking = c.at("thinking").get<bool>();
  return o;
}

}  // namespace

TEST(ChatTemplate, FamilyFormatsMatchTheReferenceRenderings) {
  const nlohmann::json j = family_vectors();
  std::map<std::string, int> rendered, refused;
  for (const auto& c : j.at("cases")) {
    const std::string name = c.at("format");
    const ChatFormat f = parse_chat_format(name);
    const std::vector<ChatMessage> ms = messages_of(c);
    if (c.contains("error")) {
      EXPECT_THROW(apply_chat_format(f, ms, options_of(c)), Error) << c.dump();
      ++refused[name];
    } else {
      EXPECT_EQ(apply_chat_format(f, ms, options_of(c)), c.at("text").get<std::string>()) << c.dump();
      ++rendered[name];
    }
  }
  // Every format, with and without a generation prompt and each thinking setting.
  for (const char* name : {"deepseek-v3", "deepseek-v3.1", "deepseek-v3.2", "glm4.5", "glm4"})
    EXPECT_GE(rendered[name], 80) << name;
  EXPECT_GE(refused["deepseek-v3.2"], 10);  // the encoder refuses what it cannot render
}

// A few cases written out, so that a regenerated vector file cannot silently change them.
TEST(ChatTemplate, FamilyExamples) {
  const std::vector<ChatMessage> su = {{"system", "S"}, {"user", "U"}};
  EXPECT_EQ(apply_chat_format(ChatFormat::deepseek_v3, su), "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜>");
  EXPECT_EQ(apply_chat_format(ChatFormat::deepseek_v31, su), "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜></think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::deepseek_v31, su, {true, true}),
            "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜><think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::deepseek_v32, su), "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜></think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::deepseek_v32, su, {true, true}),
            "<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜><think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::glm4, su), "[gMASK]<sop><|system|>S<|user|>U<|assistant|><think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::glm4, su, {true, false}), "[gMASK]<sop><|system|>S<|user|>U<|assistant|></think>");
  EXPECT_EQ(apply_chat_format(ChatFormat::glm45, su), "[gMASK]<sop><|system|>\nS<|user|>\nU<|assistant|>");
  EXPECT_EQ(apply_chat_format(ChatFormat::glm45, su, {true, false}),
            "[gMASK]<sop><|system|>\nS<|user|>\nU/nothink<|assistant|>\n<think></think>");
  const std::vector<ChatMessage> turn = {{"user", "Q"}, {"assistant", " <think>r</think>\n A \n"}, {"user", "Q2"}};
  EXPECT_EQ(apply_chat_format(ChatFormat::glm4, turn, {false, {}}),
            "[gMASK]<sop><|user|>Q<|assistant|></think>A<|user|>Q2");
  EXPECT_EQ(apply_chat_format(ChatFormat::chatml, su, {}), apply_chatml(su, true));
}

TEST(ChatTemplate, FormatNames) {
  for (ChatFormat f : {ChatFormat::chatml, ChatFormat::deepseek_v3, ChatFormat::deepseek_v31, ChatFormat::deepseek_v32,
                       ChatFormat::glm45, ChatFormat::glm4})
    EXPECT_EQ(parse_chat_format(chat_format_name(f)), f);
  try {
    parse_chat_format("llama3");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown chat format 'llama3'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("deepseek-v3.2"), std::string::npos) << e.what();
  }
}

namespace {

std::string detect_error(std::string_view t, std::string_view source = "x/tokenizer_config.json") {
  try {
    detect_chat_format(t, source);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Short templates written for these tests: each holds one format's signature lines.
const char* kV31Like =
    "{%- set ns = namespace(is_last_user=false) -%}{{ bos_token }}{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.is_last_user = true -%}{{'<｜User｜>' + message['content']}}"
    "{%- endif -%}{%- if message['role'] == 'assistant' -%}{{'<｜Assistant｜>'}}{%- set content = message['content'] -%}"
    "{%- if '</think>' in content -%}{%- set content = content.split('</think>', 1)[1] -%}{%- endif -%}"
    "{{content + '<｜end▁of▁sentence｜>'}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{'<｜Assistant｜>'}}{%- if not thinking -%}{{'</think>'}}{%- else -%}{{'<think>'}}{%- endif -%}{%- endif %}";
const char* kV3Like =
    "{% set ns = namespace(is_last_user=false) %}{{ bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content'] + '<｜Assistant｜>'}}{%- endif %}"
    "{%- endfor -%}{% if add_generation_prompt and not ns.is_last_user %}{{'<｜Assistant｜>'}}{% endif %}";

}  // namespace

TEST(ChatTemplate, DetectsFormatsBySignature) {
  EXPECT_EQ(detect_chat_format(chat_vectors().at("chat_template").get<std::string>(), "smollm2"), ChatFormat::chatml);
  EXPECT_EQ(detect_chat_format(kV31Like, "t"), ChatFormat::deepseek_v31);
  EXPECT_EQ(detect_chat_format(kV3Like, "t"), ChatFormat::deepseek_v3);
  std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/hf/glm4_moe_lite-tiny/tokenizer_config.json");
  const nlohmann::json cfg = nlohmann::json::parse(in);
  EXPECT_EQ(detect_chat_format(cfg.at("chat_template").get<std::string>(), "t"), ChatFormat::glm4);
  // The reduced test template renders as the format does for text turns.
  const std::string glm45 =
      "[gMASK]<sop>{% for m in messages %}{%- if m.role == 'user' -%}<|user|>\n{{ visible_text(m.content) }}\n"
      "{{- '/nothink' if (enable_thinking is defined and not enable_thinking) else '' -}}{%- endif -%}{%- endfor -%}"
      "{%- if add_generation_prompt -%}\n    <|assistant|>{{- '\\n<think></think>' if (enable_thinking is defined and not "
      "enable_thinking) else '' -}}\n{%- endif -%}";
  EXPECT_EQ(detect_chat_format(glm45, "t"), ChatFormat::glm45);
}

TEST(ChatTemplate, UnknownTemplatesAreErrorsNamingTheFile) {
  EXPECT_NE(detect_error("").find("x/tokenizer_config.json: the chat template is empty"), std::string::npos);
  const std::string llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}";
  EXPECT_NE(detect_error(llama3).find("x/tokenizer_config.json: a chat template this build does not know"),
            std::string::npos) << detect_error(llama3);
  // ChatML with another default system message (Qwen's) is not SmolLM2's template.
  EXPECT_NE(detect_error("<|im_start|>system\nYou are Qwen<|im_end|>").find("does not know"), std::string::npos);
  // DeepSeek-R1's template: DeepSeek's markers, another layout.
  EXPECT_NE(detect_error("{{'<｜User｜>' + c}}{{'<｜Assistant｜><think>\\n'}}").find("neither DeepSeek-V3-0324's"),
            std::string::npos);
  EXPECT_NE(detect_error("[gMASK]<sop><|user|>{{ c }}<|assistant|>").find("neither GLM-4.7's"), std::string::npos);
}

// libFuzzer-style: any template text is a format or an ic::Error, and any conversation renders
// or is an ic::Error, never a crash or another exception (fuzz/fuzz_chat_template.cpp goes further).
TEST(ChatTemplate, ArbitraryInputIsAFormatOrAnError) {
  const std::vector<std::string> pieces = {"<|im_start|>", "<|im_end|>", std::string(kSmolLM2DefaultSystem), "<｜User｜>",
                                           "<｜Assistant｜>", "is_last_user", "not thinking", "</think>", "[gMASK]<sop>",
                                           "<|assistant|>", "<|user|>", "\xff\xfe", "\xe3\x80", "{%", "}}", "\n", ""};
  const std::vector<std::string> roles = {"system", "user", "assistant", "tool", "developer", "", "x"};
  std::mt19937_64 rng(20261203);
  for (int it = 0; it < 3000; ++it) {
    std::string t;
    for (int k = static_cast<int>(rng() % 8); k-- > 0;) t += pieces[rng() % pieces.size()];
    try {
      (void)detect_chat_format(t, "fuzz");
    } catch (const Error&) {
    }
    std::vector<ChatMessage> ms(rng() % 5);
    for (ChatMessage& m : ms) {
      m.role = roles[rng() % roles.size()];
      for (int k = static_cast<int>(rng() % 4); k-- > 0;) m.content += pieces[rng() % pieces.size()];
      if (rng() % 3 == 0) m.content += static_cast<char>(rng() % 256);
    }
    ChatOptions o{rng() % 2 == 0, {}};
    if (rng() % 3) o.thinking = rng() % 2 == 0;
    for (int f = 0; f < 6; ++f) {
      try {
        const std::string text = apply_chat_format(static_cast<ChatFormat>(f), ms, o);
        EXPECT_FALSE(text.empty() && f != 0);  // every family format writes its prefix
      } catch (const Error&) {
      }
    }
  }
}

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           fmt::format("ic_chat_{}_{}", ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
  }
  std::string str() const { return path.string(); }
};

std::string folder_error(const std::string& dir) {
  try {
    chat_format_of_folder(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ChatTemplate, FolderDetection) {
  // The test folders: DeepSeek-V3.2 by its model_type (no Jinja template), GLM-4.7-Flash by its template.
  const std::string hf = std::string(IC_SOURCE_DIR) + "/tests/data/hf/";
  EXPECT_EQ(chat_format_of_folder(hf + "deepseek_v32-tiny").format, ChatFormat::deepseek_v32);
  const FolderChatFormat lite = chat_format_of_folder(hf + "glm4_moe_lite-tiny");
  EXPECT_EQ(lite.format, ChatFormat::glm4);
  EXPECT_NE(lite.source.find("tokenizer_config.json"), std::string::npos);

  TempDir d;
  EXPECT_NE(folder_error(d.str()).find(d.str() + ": no chat template"), std::string::npos) << folder_error(d.str());
  d.write("chat_template.jinja", kV3Like);
  EXPECT_EQ(chat_format_of_folder(d.str()).format, ChatFormat::deepseek_v3);
  EXPECT_NE(chat_format_of_folder(d.str()).source.find("chat_template.jinja"), std::string::npos);
  // tokenizer_config.json's template comes first; a list picks the "default" entry.
  d.write("tokenizer_config.json", nlohmann::json{{"chat_template", kV31Like}}.dump());
  EXPECT_EQ(chat_format_of_folder(d.str()).format, ChatFormat::deepseek_v31);
  d.write("tokenizer_config.json",
          nlohmann::json{{"chat_template", {{{"name", "tool_use"}, {"template", "x"}}, {{"name", "default"}, {"template", kV3Like}}}}}
              .dump());
  EXPECT_EQ(chat_format_of_folder(d.str()).format, ChatFormat::deepseek_v3);
  d.write("tokenizer_config.json", nlohmann::json{{"chat_template", {{{"name", "tool_use"}, {"template", "x"}}}}}.dump());
  EXPECT_NE(folder_error(d.str()).find("lists no template named 'default'"), std::string::npos) << folder_error(d.str());
  d.write("tokenizer_config.json", nlohmann::json{{"chat_template", 3}}.dump());
  EXPECT_NE(folder_error(d.str()).find("neither a string nor a list"), std::string::npos) << folder_error(d.str());
  d.write("tokenizer_config.json", "{\"chat_template\": \"unterminated");
  EXPECT_NE(folder_error(d.str()).find("tokenizer_config.json"), std::string::npos) << folder_error(d.str());
  d.write("tokenizer_config.json", nlohmann::json{{"chat_template", "{{ messages }}"}}.dump());
  EXPECT_NE(folder_error(d.str()).find("tokenizer_config.json: a chat template this build does not know"),
            std::string::npos) << folder_error(d.str());
}

// Each format's markers are single special tokens of the family's tokenizers, and the stop
// tokens exist, so the CLI's prompt and stop list mean what the template means.
TEST(ChatTemplate, FamilyPromptsTokenizeToTheirSpecialTokens) {
  const std::string hf = std::string(IC_SOURCE_DIR) + "/tests/data/hf/";
  const std::vector<ChatMessage> su = {{"system", "S"}, {"user", "Hello"}};
  for (const auto& [folder, format, markers] :
       {std::tuple{"deepseek_v32-tiny", ChatFormat::deepseek_v32,
                   std::vector<std::string>{"<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "</think>"}},
        std::tuple{"glm4_moe_lite-tiny", ChatFormat::glm4,
                   std::vector<std::string>{"[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<think>"}}}) {
    const std::string dir = hf + folder;
    const Tokenizer tok(tokenizer_data_from_json_files(dir + "/tokenizer.json", dir + "/tokenizer_config.json"));
    const std::vector<int32_t> ids = tok.encode(apply_chat_format(format, su));
    for (const std::string& m : markers) {
      const int32_t id = tok.token_id(m);
      ASSERT_GE(id, 0) << folder << ": " << m;
      EXPECT_EQ(std::count(ids.begin(), ids.end(), id), 1) << folder << ": " << m;
    }
    for (const std::string& s : chat_stop_texts(format)) EXPECT_GE(tok.token_id(s), 0) << folder << ": " << s;
    EXPECT_EQ(tok.decode(ids), apply_chat_format(format, su)) << folder;
  }
}

// With IC_CHAT_TEMPLATE_DIR naming the folder scripts/make-chat-vectors read (the real templates,
// not in the repository), each is detected as its format.
TEST(ChatTemplate, DetectsTheRealTemplates) {
  const char* dir = std::getenv("IC_CHAT_TEMPLATE_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "IC_CHAT_TEMPLATE_DIR not set";
  const nlohmann::json j = family_vectors();
  for (const auto& [name, t] : j.at("templates").items()) {
    if (name == "deepseek-v3.2") continue;  // Python, not a template
    const std::string path = std::string(dir) + "/" + t.at("file").get<std::string>();
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(chat_format_name(detect_chat_format(text, path)), name) << path;
  }
}

}  // namespace
}  // namespace ic
