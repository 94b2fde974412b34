#pragma once
// Passkey retrieval (Mohtashami & Jaggi, "Landmark Attention", 2023; the LongLoRA form): a
// random 5-digit key hidden at a chosen depth of a haystack of repeated filler sentences, then
// "What is the pass key? The pass key is" and the key itself. Each trial is scored with ONE
// forward, teacher-forced on the key: its negative log-likelihood and whether the model's
// argmax is the key token at every key position (exact match).
//
// Prompts are built from separately tokenised pieces (intro, filler units, needle, question,
// answer) and concatenated as token ids, so the key's tokens sit at known positions and every
// trial of a (length, depth) cell shares the same tokens before the needle: that prefix is
// prefilled once per cell and each trial runs only the rest (KVCache::set_size).
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "indexcache/text_data.h"  // TokenizeFn
#include "model/model.h"

namespace ic {

// The pieces of the prompt. "{KEY}" in needle and answer is replaced by the key.
struct PasskeyText {
  std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the important information there.";
  std::string filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
  std::string needle = " The pass key is {KEY}. Remember it. {KEY} is the pass key.";
  std::string question = " What is the pass key? The pass key is";
  std::string answer = " {KEY}";
};

// Token positions of one prompt: [0, prefix_len) intro and the filler before the needle,
// [prefix_len, needle_end) the needle, then filler, the question and, at
// [key_begin, tokens.size()), the key.
struct PasskeyPrompt {
  std::vector<int32_t> tokens;
  int64_t prefix_len = 0;
  int64_t needle_end = 0;
  int64_t key_begin = 0;
  int64_t n_filler_units = 0;  // filler units in the haystack
  int64_t n_before = 0;        // of which before the needle
  int64_t key_len() const { return static_cast<int64_t>(tokens.size()) - key_begin; }
  // Share of the haystack's filler before the needle, in [0, 1] (0 with no filler).
  double depth() const { return n_filler_units ? static_cast<double>(n_before) / n_filler_units : 0.0; }
};

class PasskeyBuilder {
 public:
  PasskeyBuilder(TokenizeFn tokenize, PasskeyText text = {});
  // A prompt of at most target_len tokens and at least target_len minus one filler unit (the
  // key's length is that of the key given; 5-digit keys all have the same length in a tokenizer
  // that splits digits). depth in [0, 1]: the needle follows round(depth * units) filler units.
  // Throws ic::Error when target_len cannot hold the intro, needle, question and key.
  PasskeyPrompt build(int64_t target_len, double depth, std::string_view key) const;
  int64_t filler_unit_tokens() const { return static_cast<int64_t>(filler_.size()); }

 private:
  std::vector<int32_t> piece(const std::string& templ, std::string_view key) const;
  TokenizeFn tokenize_;
  PasskeyText text_;
  std::vector<int32_t> intro_, filler_, question_;
};

// The 5-digit key of a trial ("00000".."99999"): splitmix64 of (seed, cell, trial), the same on
// every platform, and the same for every configuration evaluated with the seed.
std::string passkey_key(uint64_t seed, int64_t cell, int64_t trial);

struct PasskeyScore {
  double nll = 0.0;  // -sum over key tokens of log p(key token | everything before), nats
  bool exact = false;
};

// Scores a prompt whose first prompt.prefix_len tokens are in `kv` (positions 0..prefix_len-1,
// for example from an earlier trial of the same cell; kv.size() may be larger, it is cut back).
// Runs the rest of the prompt in one forward, teacher-forced: logits only for the rows that
// predict key tokens.
PasskeyScore score_passkey(Model& model, ModelCache& kv, const PasskeyPrompt& prompt);

struct PasskeyOptions {
  std::vector<int64_t> lengths{1024, 2048, 4096, 8192};  // target prompt lengths in tokens
  std::vector<double> depths{0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 200;  // per (length, depth) cell
  uint64_t seed = 1234;
};

struct PasskeyCell {
  int64_t target_len = 0;
  double depth = 0.0;         // requested
  double actual_depth = 0.0;  // of the built prompts
  int64_t prompt_len = 0;     // tokens of the first trial's prompt
  int64_t prefix_len = 0;
  int64_t trials = 0, exact = 0;
  double nll_sum = 0.0;
  double accuracy() const { return trials ? static_cast<double>(exact) / trials : 0.0; }
  double mean_nll() const { return trials ? nll_sum / trials : 0.0; }
};

struct PasskeyReport {
  std::vector<PasskeyCell> cells;  // lengths outer, depths inner
  int64_t tokens = 0;              // tokens run through the model (prefixes once per cell)
  double seconds = 0.0;
  double accuracy() const;  // over all trials
  double mean_nll() const;
};

struct PasskeyProgress {
  int64_t trials_done, trials_total, tokens, tokens_total_estimate;
  double seconds;
};

// Every cell of `opt` on `model` (dense or with its DSA spec): one KV cache of the longest
// prompt, the prefix of each cell prefilled once. Throws ic::Error on a length past the model's
// trained context or a depth outside [0, 1].
PasskeyReport run_passkey(Model& model, const PasskeyBuilder& builder, const PasskeyOptions& opt,
                          const std::function<void(const PasskeyProgress&)>& progress = nullptr);

}  // namespace ic
