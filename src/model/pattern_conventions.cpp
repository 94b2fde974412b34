// The IndexCache knobs of config.json under each engine's rule (see the header for the rules
// and where they come from).
#include "model/pattern_conventions.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_folder.h"

namespace ic {

namespace {

using json = nlohmann::json;

using namespace pattern_keys;

std::string trim(std::string s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// One list entry ("full"/"shared", or SGLang's wider set) as true = F.
bool entry_is_full(const json& v, PatternRule rule, const std::string& where, size_t i) {
  IC_CHECK(v.is_string(), "{}[{}] is a JSON {}, a string expected", where, i, v.type_name());
  const std::string& s = v.get_ref<const std::string&>();
  if (rule == PatternRule::SGLang) {
    const std::string w = ascii_lower(trim(s));
    if (w == "f" || w == "full" || w == "compute") return true;
    if (w == "s" || w == "shared" || w == "skip") return false;
    fail("{}[{}] is \"{}\"; SGLang reads full/f/compute or shared/s/skip", where, i, s);
  }
  if (rule == PatternRule::THUDM) {  // a list pattern of letters
    if (s == "F" || s == "S") return s == "F";
    fail("{}[{}] is \"{}\", \"F\" or \"S\" expected", where, i, s);
  }
  if (s == "full" || s == "shared") return s == "full";
  fail("{}[{}] is \"{}\", \"full\" or \"shared\" expected", where, i, s);
}

// One pattern letter as true = F: F/S (SGLang also f/s, as it lower-cases).
bool letter_is_full(char c, PatternRule rule, const std::string& where, size_t i) {
  const char l = rule == PatternRule::SGLang && (c == 'f' || c == 's') ? static_cast<char>(c - 32) : c;
  IC_CHECK(l == 'F' || l == 'S', "{} has '{}' at layer {}; only F (full) and S (shared) are allowed",
           where, c, i);
  return l == 'F';
}

// The flags of a per-layer knob: a JSON array of entries, or (patterns only) a string of
// letters; exactly n_layers of them with layer 0 full.
LayerPattern per_layer(const hf::Config& c, const char* key, int64_t n_layers, PatternRule rule) {
  const json& v = c.json().at(key);
  const std::string where = c.where(key);
  const bool letters = v.is_string() && std::string_view(key) == kPattern;
  IC_CHECK(letters || v.is_array(), "{} is a JSON {}, {} expected", where, v.type_name(),
           std::string_view(key) == kPattern ? "a string of F/S letters or an array" : "an array");
  const size_t n = letters ? v.get_ref<const std::string&>().size() : v.size();
  IC_CHECK(static_cast<int64_t>(n) == n_layers, "{} has {} entries but the model has {} layers",
           where, n, n_layers);
  // A pattern list under HF is taken as indexer_types ("full"/"shared").
  std::vector<bool> full(n);
  for (size_t i = 0; i < n; ++i)
    full[i] = letters ? letter_is_full(v.get_ref<const std::string&>()[i], rule, where, i)
                      : entry_is_full(v[i], rule, where, i);
  IC_CHECK(full[0], "{} makes layer 0 shared, but the first layer must be full: an S layer "
           "reuses the selection of a preceding F layer", where);
  return LayerPattern::from_flags(std::move(full));
}

// max(l - offset + 1, 0) % freq == 0 for any int64 offset, without overflow.
bool full_by_offset(int64_t l, int64_t freq, int64_t offset) {
  if (l + 1 <= offset) return true;  // the max(..., 0) branch
  const int64_t om = ((offset % freq) + freq) % freq;
  return ((l + 1) % freq - om + freq) % freq == 0;
}

// Which knob a rule builds its pattern from, or nullptr when the config has none it reads.
const char* chosen_knob(const hf::Config& c, PatternRule rule) {
  if (rule != PatternRule::THUDM && c.has(kTypes)) return kTypes;
  if (c.has(kPattern)) return kPattern;
  if (c.has(kFreq)) return kFreq;
  if (rule != PatternRule::THUDM && c.has(kOffset)) return kOffset;
  return nullptr;
}

}  // namespace

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view pattern_rule_name(PatternRule r) {
  switch (r) {
    case PatternRule::THUDM: return "thudm";
    case PatternRule::SGLang: return "sglang";
    case PatternRule::HF: return "hf";
  }
  return "?";
}

PatternRule parse_pattern_rule(std::string_view name) {
  const std::string n = ascii_lower(name);
  for (PatternRule r : {PatternRule::THUDM, PatternRule::SGLang, PatternRule::HF})
    if (n == pattern_rule_name(r)) return r;
  fail("unknown IndexCache pattern rule '{}' (known: thudm, sglang, hf)", name);
}

LayerPattern pattern_from_freq(int64_t n_layers, int64_t freq, std::optional<int64_t> offset,
                               PatternRule rule) {
  IC_CHECK(n_layers >= 1 && n_layers <= kMaxPatternLayers,
           "a layer pattern has 1 to {} layers, got {}", kMaxPatternLayers, n_layers);
  IC_CHECK(freq >= 1, "index_topk_freq is {}, a positive integer expected", freq);
  // THUDM's max(l - 1, 0) is the offset-2 formula; 2 is also HF's default, and SGLang without
  // an offset falls back to THUDM's formula.
  if (rule == PatternRule::THUDM || !offset) offset = 2;
  if (rule == PatternRule::SGLang && freq > 1)
    IC_CHECK(*offset >= 1, "index_skip_topk_offset is {}; SGLang needs a positive offset (layer "
             "0 would reuse a selection nothing computed)", *offset);
  std::vector<bool> full(static_cast<size_t>(n_layers));
  for (int64_t l = 0; l < n_layers; ++l) full[l] = full_by_offset(l, freq, *offset);
  IC_CHECK(full[0], "index_topk_freq {} with index_skip_topk_offset {} makes layer 0 shared under "
           "the {} rule, but the first layer must be full", freq, *offset, pattern_rule_name(rule));
  return LayerPattern::from_flags(std::move(full));
}

std::optional<LayerPattern> pattern_from_config(const hf::Config& c, int64_t n_layers,
                                                PatternRule rule) {
  IC_CHECK(n_layers >= 1 && n_layers <= kMaxPatternLayers,
           "{}: a layer pattern has 1 to {} layers, got {}", c.path(), kMaxPatternLayers, n_layers);
  const char* knob = chosen_knob(c, rule);
  if (!knob) return std::nullopt;
  if (knob == kTypes || knob == kPattern) return per_layer(c, knob, n_layers, rule);
  const int64_t freq = c.get_int_or(kFreq, 1);
  std::optional<int64_t> offset;
  if (rule != PatternRule::THUDM && c.has(kOffset)) offset = c.get_int(kOffset);
  try {
    return pattern_from_freq(n_layers, freq, offset, rule);
  } catch (const Error& e) {
    fail("{}: {}", c.path(), e.what());
  }
}

std::vector<std::string> ignored_knobs(const hf::Config& c, PatternRule rule) {
  const char* knob = chosen_knob(c, rule);
  const bool by_freq = knob == kFreq || knob == kOffset;
  std::vector<std::string> out;
  for (const char* k : {kTypes, kPattern, kFreq, kOffset}) {
    if (!c.has(k)) continue;
    const bool used = k == knob || (by_freq && k == kFreq) ||
                      (by_freq && k == kOffset && rule != PatternRule::THUDM);
    if (!used) out.emplace_back(k);
  }
  return out;
}

std::optional<std::pair<int64_t, int64_t>> as_freq_offset(const LayerPattern& p,
                                                          PatternRule rule) {
  const int64_t n = p.n_layers();
  const int64_t canonical_offset = rule == PatternRule::THUDM ? 2 : 1;
  if (p.n_full() == n) return std::make_pair(int64_t{1}, canonical_offset);
  // With freq > 1 the schedule is: `offset` leading F layers, then an F every freq layers from
  // layer offset - 1 + freq. Both are forced by the pattern (the next F after the leading run,
  // or, where there is none, the smallest freq that puts it past the end); check the result.
  int64_t offset = 0;
  while (offset < n && p.is_full(offset)) ++offset;
  int64_t next = offset;
  while (next < n && !p.is_full(next)) ++next;
  const int64_t freq = next < n ? next - (offset - 1) : n - offset + 1;
  if (rule == PatternRule::THUDM && offset != 2) return std::nullopt;
  if (!(pattern_from_freq(n, freq, offset, rule) == p)) return std::nullopt;
  return std::make_pair(freq, offset);
}

}  // namespace ic
