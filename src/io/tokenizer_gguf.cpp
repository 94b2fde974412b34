// TokenizerData from a GGUF's tokenizer.* metadata (key names as llama.cpp writes them).
#include <limits>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"

namespace ic {
namespace {

int32_t optional_id(const gguf::File& f, std::string_view key) {
  const int64_t v = f.get_int_or(key, -1);
  IC_CHECK(v >= -1 && v <= std::numeric_limits<int32_t>::max(), "{}: {} = {} is not a token id",
           f.path(), key, v);
  return static_cast<int32_t>(v);
}

}  // namespace

TokenizerData tokenizer_data_from_gguf(const gguf::File& f) {
  TokenizerData d;
  d.model = f.get_string("tokenizer.ggml.model");
  // llama.cpp reads a missing pre key as "default", a regex set that this tokenizer lacks; the
  // Tokenizer constructor says so rather than guessing.
  d.pre = f.get_string_or("tokenizer.ggml.pre", "default");
  d.tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.merges")) d.merges = f.get_string_array("tokenizer.ggml.merges");
  if (f.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
    d.token_types.reserve(types.size());
    for (const int64_t t : types) {
      IC_CHECK(t >= std::numeric_limits<int32_t>::min() && t <= std::numeric_limits<int32_t>::max(),
               "{}: tokenizer.ggml.token_type holds {}, not a token type", f.path(), t);
      d.token_types.push_back(static_cast<int32_t>(t));
    }
  }
  d.bos_id = optional_id(f, "tokenizer.ggml.bos_token_id");
  d.eos_id = optional_id(f, "tokenizer.ggml.eos_token_id");
  d.unk_id = optional_id(f, "tokenizer.ggml.unknown_token_id");
  d.pad_id = optional_id(f, "tokenizer.ggml.padding_token_id");
  d.add_bos = f.has("tokenizer.ggml.add_bos_token") && f.get_bool("tokenizer.ggml.add_bos_token");
  d.chat_template = f.get_string_or("tokenizer.chat_template", "");
  return d;
}

}  // namespace ic
