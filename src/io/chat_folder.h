#pragma once
// The chat format of an HF model folder, from the template it ships:
//   1. tokenizer_config.json's "chat_template" (a string, or a list of named templates of which
//      "default" is the one transformers renders);
//   2. else the chat_template.jinja file (transformers' newer layout);
//   3. else, for a folder whose config.json has model_type "deepseek_v32" (DeepSeek-V3.2 ships
//      no Jinja template, only its Python encoder encoding/encoding_dsv32.py), deepseek-v3.2.
// The template text is recognised by detect_chat_format (io/chat_template.h). Every failure is an
// ic::Error naming the file: no template at all, an unknown template, unreadable JSON.
#include <string>

#include "io/chat_template.h"

namespace ic {

struct FolderChatFormat {
  ChatFormat format;
  std::string source;  // where it came from: "<dir>/tokenizer_config.json", ".../chat_template.jinja", ...
};

FolderChatFormat chat_format_of_folder(const std::string& dir);

}  // namespace ic
