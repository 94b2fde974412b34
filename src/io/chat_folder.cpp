// Finding an HF model folder's chat template and recognising its format.
#include "io/chat_folder.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_folder.h"
#include "io/mapped_file.h"
#include "io/tokenizer_json.h"

namespace ic {
namespace {

namespace fs = std::filesystem;

// The template text in tokenizer_config.json, "" when it has none.
std::string config_template(const std::string& path) {
  const hf::Config c = hf::Config::parse(read_file_bounded(path, kMaxTokenizerConfigBytes, "a tokenizer config"), path);
  const nlohmann::json& j = c.json();
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  IC_CHECK(it->is_array(), "{}: 'chat_template' is neither a string nor a list of named templates", path);
  for (const nlohmann::json& e : *it) {
    if (!e.is_object()) continue;
    const auto name = e.find("name"), text = e.find("template");
    if (name != e.end() && name->is_string() && *name == "default") {
      IC_CHECK(text != e.end() && text->is_string(), "{}: the 'default' chat_template has no template string", path);
      return text->get<std::string>();
    }
  }
  fail("{}: 'chat_template' lists no template named 'default'", path);
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

FolderChatFormat chat_format_of_folder(const std::string& dir) {
  const fs::path d(dir);
  const std::string config_path = (d / "tokenizer_config.json").string();
  if (is_file(config_path)) {
    const std::string t = config_template(config_path);
    if (!t.empty()) return {detect_chat_format(t, config_path), config_path};
  }
  const std::string jinja_path = (d / "chat_template.jinja").string();
  if (is_file(jinja_path)) {
    const std::string t = read_file_bounded(jinja_path, kMaxTokenizerConfigBytes, "a chat template");
    return {detect_chat_format(t, jinja_path), jinja_path};
  }
  const std::string model_config = (d / "config.json").string();
  if (is_file(model_config) && hf::Config::load(model_config).get_string_or("model_type", "") == "deepseek_v32")
    return {ChatFormat::deepseek_v32, model_config + " (model_type deepseek_v32: DeepSeek-V3.2's Python encoding)"};
  fail("{}: no chat template (no 'chat_template' in tokenizer_config.json, no chat_template.jinja); "
       "pass a chat format explicitly (known: {})", dir, chat_format_names());
}

}  // namespace ic
