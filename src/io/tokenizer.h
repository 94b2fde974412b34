#pragma once
// GPT-2 style byte-level BPE tokenizer, as HF `tokenizers` runs it for the models whose GGUF says
// tokenizer.ggml.model = "gpt2" (SmolLM2 among them): special tokens are cut out of the text
// first, the rest is split by the pre-tokenizer (io/pretokenize.h), and each piece's bytes are
// merged by rank. Tokens are kept as raw bytes, so any input, valid UTF-8 or not, round-trips,
// except bytes that have no token in the vocabulary (see byte_has_token): HF drops those.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/merge_table.h"
#include "io/pretokenize.h"

namespace ic {

namespace gguf {
class File;
}

// What a GGUF's tokenizer.ggml.* metadata holds (or an HF tokenizer.json: io/tokenizer_json.h).
struct TokenizerData {
  std::string model = "gpt2";         // tokenizer.ggml.model; only "gpt2" is supported
  std::string pre = "smollm";         // tokenizer.ggml.pre: a name pre_tokenizer_from_name knows
  std::vector<std::string> tokens;    // tokenizer.ggml.tokens (byte-level encoded strings)
  std::vector<std::string> merges;    // tokenizer.ggml.merges ("a b"), best first
  std::vector<int32_t> token_types;   // tokenizer.ggml.token_type; empty = all normal
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  // -1 = none
  bool add_bos = false;
  // What HF's post-processor puts around one encoded text (tokenizer.json). add_bos and bos_id
  // say the same when the prefix is one token and the suffix empty; GLM-style templates
  // ("[gMASK] <sop> $A") need these. Empty for a GGUF (add_bos says it all).
  std::vector<int32_t> post_prefix, post_suffix;
  std::string chat_template;          // tokenizer.chat_template (may be empty)
  // HF BPE's ignore_merges: a piece that is itself a normal vocabulary entry is that token,
  // whatever the merges would make of it.
  bool ignore_merges = false;
  // Control / user-defined tokens that HF matches only in what the others leave (tokenizer.json
  // added tokens with "normalized": true, when some are not; HF cuts out the non-normalized ones
  // first). Empty for a GGUF.
  std::vector<int32_t> second_pass_specials;
  // How tokens outside the byte-level alphabet decode. false (GGUF, as llama.cpp): control and
  // user-defined tokens are their text, and a normal token outside the alphabet is an error.
  // true (tokenizer.json, as HF's ByteLevel decoder): any token whose characters are all in the
  // alphabet decodes to those bytes, any other to its text; normal tokens outside the alphabet
  // are allowed (BPE never produces them).
  bool hf_byte_level_decode = false;
};

// Token types as llama.cpp writes them into tokenizer.ggml.token_type.
enum TokenType : int32_t {
  kTokenUndefined = 0,
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

// Reads the tokenizer.ggml.* keys (src/io/tokenizer_gguf.cpp); throws ic::Error when a required
// one is missing or has the wrong type.
TokenizerData tokenizer_data_from_gguf(const gguf::File& f);

class Tokenizer {
 public:
  // Validates everything (model, pre-tokenizer, ids in range, every normal token in the
  // byte-level alphabet, every merge's parts and result in the vocabulary): throws ic::Error.
  explicit Tokenizer(TokenizerData data);

  // Token ids of `text`. Never adds BOS/EOS (see add_bos()). With parse_special, the text of a
  // control token such as "<|im_start|>" becomes that token (leftmost, then longest match);
  // without it, it is plain text. User-defined tokens are always matched, as in HF (which also
  // finds a control token's match without parse_special, then keeps it as text: so a
  // user-defined token inside that text is not matched either).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Concatenated raw bytes of the tokens (control tokens as their text): the byte-exact inverse
  // of encode for any text whose bytes all have tokens. Throws on an id out of range.
  std::string decode(std::span<const int32_t> ids) const;
  // Raw bytes of one token; may be part of a UTF-8 sequence, so stream these, don't print them
  // one by one as text. Control and user-defined tokens: see TokenizerData::hf_byte_level_decode.
  const std::string& piece(int32_t id) const;

  int32_t bos_id() const { return data_.bos_id; }
  int32_t eos_id() const { return data_.eos_id; }
  bool add_bos() const { return data_.add_bos; }
  // HF's encode(text, add_special_tokens=True) is post_prefix() + encode(text) + post_suffix().
  std::span<const int32_t> post_prefix() const { return data_.post_prefix; }
  std::span<const int32_t> post_suffix() const { return data_.post_suffix; }
  int64_t vocab_size() const { return static_cast<int64_t>(data_.tokens.size()); }
  // Id of a vocabulary entry by its text as stored (byte-level encoded: "Ġthe", "<|im_end|>");
  // -1 if absent.
  int32_t token_id(std::string_view token_text) const;
  bool is_control(int32_t id) const;
  // False for the bytes the vocabulary has no token for: encode drops them, as HF does
  // (SmolLM2 lacks 21: 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5-0xFF).
  bool byte_has_token(uint8_t byte) const;
  const TokenizerData& data() const { return data_; }

 private:
  struct Special {
    std::string text;
    int32_t id;
    bool control;      // matched only with parse_special
    bool second_pass;  // see TokenizerData::second_pass_specials
  };

  struct WordCache;  // per encode() call, so encode stays const and thread-safe

  // Appends the BPE ids of one pre-tokenized piece.
  void bpe(std::string_view piece, WordCache& scratch, std::vector<int32_t>& out) const;
  // Appends the ids of `text`, cutting out the special tokens of one pass (the second pass
  // runs on what the first leaves).
  void encode_pass(std::string_view text, bool second_pass, bool parse_special, WordCache& cache,
                   std::vector<int32_t>& out) const;
  // Appends the ids of text that holds no special token.
  void encode_plain(std::string_view text, WordCache& cache, std::vector<int32_t>& out) const;
  // The normal token whose bytes are `piece`, or -1 (for ignore_merges).
  int32_t whole_piece_token(std::string_view piece) const;

  TokenizerData data_;
  PreTokenizer pre_;
  // Transparent, so token_id() looks up a string_view without a copy.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_ids_;
  std::vector<std::string> pieces_;                          // id -> raw bytes
  std::array<int32_t, 256> byte_token_{};                    // byte -> its token, -1 if none
  MergeTable merges_;
  std::vector<Special> specials_;                            // longest first
  std::array<bool, 256> special_first_byte_{};
  bool has_second_pass_ = false;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> normal_by_bytes_;  // ignore_merges
};

}  // namespace ic
