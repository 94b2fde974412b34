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
  // DeepSeek-V3 / V3.2 (tokenizer.json: a Sequence of three Split regexes, each "Isolated": the
  // matches and the text between them are pieces; every split runs on the previous one's pieces):
  //   1. \p{N}{1,3}
  //   2. [\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+
  //   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
  //       ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  DeepseekV3,
  // GLM-4 / GLM-4.5 / GLM-5 (one Isolated Split, the Llama-3 form with \p{N}{1,3}):
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  //   \s*[\r\n]+|\s+(?!\S)|\s+
  // (?i) folds case as Oniguruma does: ASCII letters either case, and U+017F (long s) for s.
  Glm4,
};

// "smollm"; "gpt2" or "gpt-2"; "deepseek-v3"; "glm4". Throws ic::Error listing the supported
// names otherwise.
PreTokenizer pre_tokenizer_from_name(std::string_view name);

// Append the pieces of `text` to `out`, in order; they are views into `text` and their
// concatenation is `text`, byte for byte. Invalid UTF-8 bytes count one character each, of no
// class (GPT-2 / SmolLM / GLM-4: [^\s\p{L}\p{N}]; DeepSeek-V3: not \p{P} or \p{S} either, as a
// control character).
void pretokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out);

}  // namespace ic
