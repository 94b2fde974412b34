#pragma once
// Pre-tokenizers of byte-level BPE: they cut text into pieces that BPE then encodes one by one,
// exactly as HF `tokenizers` does for the models that name them in tokenizer.ggml.pre.
#include <string_view>
#include <vector>

namespace ic {

enum class PreTokenizer {
  // The GPT-2 split regex:
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2,
  // SmolLM / StarCoder: every \p{N} code point is a piece of its own (HF Digits with
  // individual_digits), then the GPT-2 regex runs on each stretch between them separately.
  Smollm,
};

// "smollm"; "gpt2" or "gpt-2". Throws ic::Error listing the supported names otherwise.
PreTokenizer pre_tokenizer_from_name(std::string_view name);

// Append the pieces of `text` to `out`, in order; they are views into `text` and their
// concatenation is `text`, byte for byte. Invalid UTF-8 bytes count as punctuation, one each.
void pretokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out);

}  // namespace ic
