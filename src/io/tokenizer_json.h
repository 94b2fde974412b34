#pragma once
// TokenizerData from an HF model folder's tokenizer.json (the `tokenizers` library's format) and
// tokenizer_config.json, for the byte-level BPE tokenizers of the DSA model family (DeepSeek-V3 /
// V3.2, GLM-4.x / GLM-5) and GPT-2 / SmolLM-style ones.
//
// What is read, and what HF does with it:
//   model              BPE: vocab (token -> id), merges ("a b" strings or [a, b] pairs, best
//                      first), ignore_merges; dropout, unk_token, byte_fallback,
//                      continuing_subword_prefix and end_of_word_suffix must be off.
//   added_tokens       id, content, special (control: matched only with parse_special) or not
//                      (user-defined: always matched), normalized (the matching pass);
//                      lstrip / rstrip / single_word must be false.
//   normalizer         null or an empty Sequence.
//   pre_tokenizer      recognised by its exact configuration: "deepseek-v3", "glm4", "gpt2",
//                      "smollm" (see io/pretokenize.h); anything else is an error that shows it.
//   post_processor     null, ByteLevel, TemplateProcessing (special tokens around one $A), or a
//                      Sequence of those: TokenizerData::post_prefix / post_suffix.
//   decoder            ByteLevel.
//   tokenizer_config   add_bos_token (decides BOS when present, as transformers' Llama-family
//                      classes rebuild the post-processor from it), bos/eos/pad/unk_token,
//                      chat_template, added_tokens_decoder (must agree with tokenizer.json).
// Anything else that would make HF encode differently is an ic::Error naming the file and the
// field: never a silently different tokenizer.
#include <cstddef>
#include <string>

#include "io/tokenizer.h"

namespace ic {

// Bounds checked before the parts they bound are allocated.
// The JSON text bounds the parsed document (about ten times its size); real files are far
// smaller: DeepSeek-V3's tokenizer.json is 7.8 MB, the largest common ones (Gemma) about 33 MB.
inline constexpr size_t kMaxTokenizerJsonBytes = size_t{128} << 20;
inline constexpr size_t kMaxTokenizerConfigBytes = size_t{16} << 20;
inline constexpr size_t kMaxTokenizerVocab = 10'000'000;                  // model.vocab + added_tokens
inline constexpr size_t kMaxTokenizerMerges = 10'000'000;

// Parses the two files' text (tokenizer_config_json may be empty: no config). json_name and
// config_name are what error messages call the files (their paths, when read from disk).
TokenizerData tokenizer_data_from_json(const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                                       const std::string& json_name = "tokenizer.json",
                                       const std::string& config_name = "tokenizer_config.json");

// Reads the files (config_path may be "": no config) and parses them as above.
TokenizerData tokenizer_data_from_json_files(const std::string& json_path, const std::string& config_path);

}  // namespace ic
