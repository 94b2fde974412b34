#include "runtime/passkey.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "runtime/perplexity.h"  // log_prob

namespace ic {

namespace {
std::string substitute(const std::string& templ, std::string_view key) {
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = templ.find("{KEY}", at)) != std::string::npos; at = hit + 5) {
    out.append(templ, at, hit - at);
    out.append(key);
  }
  out.append(templ, at);
  return out;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& piece) {
  out.insert(out.end(), piece.begin(), piece.end());
}

int32_t argmax_row(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}
}  // namespace

PasskeyBuilder::PasskeyBuilder(TokenizeFn tokenize, PasskeyText text)
    : tokenize_(std::move(tokenize)), text_(std::move(text)) {
  intro_ = tokenize_(text_.intro);
  filler_ = tokenize_(text_.filler);
  question_ = tokenize_(text_.question);
  IC_CHECK(!filler_.empty(), "passkey: the filler text '{}' gives no tokens", text_.filler);
  IC_CHECK(text_.needle.find("{KEY}") != std::string::npos && text_.answer.find("{KEY}") != std::string::npos,
           "passkey: the needle and the answer must contain {{KEY}}");
}

std::vector<int32_t> PasskeyBuilder::piece(const std::string& templ, std::string_view key) const {
  return tokenize_(substitute(templ, key));
}

PasskeyPrompt PasskeyBuilder::build(int64_t target_len, double depth, std::string_view key) const {
  IC_CHECK(depth >= 0.0 && depth <= 1.0, "passkey: depth {} outside [0, 1]", depth);
  const std::vector<int32_t> needle = piece(text_.needle, key), answer = piece(text_.answer, key);
  IC_CHECK(!answer.empty(), "passkey: the key '{}' gives no tokens", key);
  const int64_t fixed = static_cast<int64_t>(intro_.size() + needle.size() + question_.size() + answer.size());
  IC_CHECK(target_len >= fixed, "passkey: a prompt of {} tokens cannot hold the intro, needle, question and key ({} tokens)",
           target_len, fixed);
  PasskeyPrompt p;
  p.n_filler_units = (target_len - fixed) / filler_unit_tokens();
  p.n_before = static_cast<int64_t>(std::llround(depth * static_cast<double>(p.n_filler_units)));
  p.tokens.reserve(static_cast<size_t>(target_len));
  append(p.tokens, intro_);
  for (int64_t i = 0; i < p.n_before; ++i) append(p.tokens, filler_);
  p.prefix_len = static_cast<int64_t>(p.tokens.size());
  append(p.tokens, needle);
  p.needle_end = static_cast<int64_t>(p.tokens.size());
  for (int64_t i = p.n_before; i < p.n_filler_units; ++i) append(p.tokens, filler_);
  append(p.tokens, question_);
  p.key_begin = static_cast<int64_t>(p.tokens.size());
  append(p.tokens, answer);
  return p;
}

std::string passkey_key(uint64_t seed, int64_t cell, int64_t trial) {
  const uint64_t h = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(cell)) ^ static_cast<uint64_t>(trial));
  std::string key = std::to_string(h % 100000);
  return std::string(5 - key.size(), '0') + key;
}

PasskeyScore score_passkey(Model& model, ModelCache& kv, const PasskeyPrompt& prompt) {
  const int64_t n = static_cast<int64_t>(prompt.tokens.size());
  const int64_t n_key = prompt.key_len();
  IC_CHECK(n_key > 0 && prompt.key_begin - 1 >= prompt.prefix_len,
           "passkey: the key must follow the prefix (prefix {}, key at {})", prompt.prefix_len, prompt.key_begin);
  IC_CHECK(kv.size() >= prompt.prefix_len, "passkey: the cache holds {} tokens, the prefix needs {}", kv.size(),
           prompt.prefix_len);
  IC_CHECK(n <= kv.capacity(), "passkey: a prompt of {} tokens exceeds the cache capacity {}", n, kv.capacity());
  kv.set_size(prompt.prefix_len);
  const std::span<const int32_t> all(prompt.tokens);
  // The rows that predict key tokens are those of tokens key_begin-1 .. n-2; everything before
  // them needs no logits (forward without all_logits computes one row, which is ignored).
  const int64_t tail_begin = prompt.key_begin - 1;
  Tensor logits;
  if (tail_begin > prompt.prefix_len)
    model.forward(all.subspan(prompt.prefix_len, tail_begin - prompt.prefix_len), kv, logits, false);
  model.forward(all.subspan(tail_begin, n_key), kv, logits, true);
  const int64_t V = model.info().vocab;
  // Exact match is "every key position's argmax is the key token". It equals greedy decoding of
  // the key: greedy decoding feeds back its own argmax, so while every argmax so far matched, the
  // tokens it has fed are the key's and its logits at the next position are these teacher-forced
  // ones; at the first mismatch both call the trial a miss (tests/test_passkey.cpp checks it).
  PasskeyScore s;
  s.exact = true;
  for (int64_t i = 0; i < n_key; ++i) {
    const float* row = logits.data<float>() + i * V;
    const int32_t target = prompt.tokens[prompt.key_begin + i];
    s.nll -= log_prob({row, static_cast<size_t>(V)}, target);
    if (argmax_row(row, V) != target) s.exact = false;
  }
  return s;
}

double PasskeyReport::accuracy() const {
  int64_t t = 0, e = 0;
  for (const PasskeyCell& c : cells) t += c.trials, e += c.exact;
  return t ? static_cast<double>(e) / t : 0.0;
}

double PasskeyReport::mean_nll() const {
  int64_t t = 0;
  double s = 0;
  for (const PasskeyCell& c : cells) t += c.trials, s += c.nll_sum;
  return t ? s / t : 0.0;
}

PasskeyReport run_passkey(Model& model, const PasskeyBuilder& builder, const PasskeyOptions& opt,
                          const std::function<void(const PasskeyProgress&)>& progress) {
  IC_CHECK(opt.trials > 0, "passkey: trials must be positive, got {}", opt.trials);
  IC_CHECK(!opt.lengths.empty() && !opt.depths.empty(), "passkey: no lengths or no depths");
  const int64_t ctx_max = model.info().context_max;
  for (int64_t len : opt.lengths)
    IC_CHECK(len > 0 && len <= ctx_max, "passkey: length {} exceeds the model's trained context {}", len, ctx_max);
  for (double d : opt.depths) IC_CHECK(d >= 0.0 && d <= 1.0, "passkey: depth {} outside [0, 1]", d);

  PasskeyReport r;
  const int64_t capacity = *std::max_element(opt.lengths.begin(), opt.lengths.end());
  const auto kv_owner = model.make_cache(capacity);
  ModelCache& kv = *kv_owner;
  // Estimated work for the ETA: per cell one prefix, then the rest once per trial.
  int64_t total = 0;
  for (int64_t len : opt.lengths)
    for (double d : opt.depths) total += static_cast<int64_t>(len * d + (1.0 - d) * len * opt.trials);
  const int64_t trials_total = opt.trials * static_cast<int64_t>(opt.lengths.size() * opt.depths.size());
  const auto t0 = std::chrono::steady_clock::now();
  int64_t done = 0;
  Tensor logits;
  for (int64_t len : opt.lengths)
    for (double depth : opt.depths) {
      const int64_t cell_id = static_cast<int64_t>(r.cells.size());
      PasskeyCell cell;
      cell.target_len = len;
      cell.depth = depth;
      std::vector<int32_t> prefix;
      for (int64_t t = 0; t < opt.trials; ++t) {
        const PasskeyPrompt p = builder.build(len, depth, passkey_key(opt.seed, cell_id, t));
        IC_CHECK(static_cast<int64_t>(p.tokens.size()) <= ctx_max,
                 "passkey: a prompt of {} tokens exceeds the model's trained context {}", p.tokens.size(), ctx_max);
        if (t == 0) {
          cell.prompt_len = static_cast<int64_t>(p.tokens.size());
          cell.prefix_len = p.prefix_len;
          cell.actual_depth = p.depth();
          prefix.assign(p.tokens.begin(), p.tokens.begin() + p.prefix_len);
          kv.clear();
          model.forward(prefix, kv, logits, false);
          r.tokens += p.prefix_len;
        }
        IC_ASSERT(p.prefix_len == cell.prefix_len && std::equal(prefix.begin(), prefix.end(), p.tokens.begin()));
        const PasskeyScore s = score_passkey(model, kv, p);
        r.tokens += static_cast<int64_t>(p.tokens.size()) - p.prefix_len;
        ++cell.trials;
        cell.exact += s.exact ? 1 : 0;
        cell.nll_sum += s.nll;
        ++done;
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (progress) progress({done, trials_total, r.tokens, std::max(total, r.tokens), r.seconds});
      }
      r.cells.push_back(cell);
    }
  return r;
}

}  // namespace ic
