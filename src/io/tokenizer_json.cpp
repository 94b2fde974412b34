#include "io/tokenizer_json.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "io/json_describe.h"
#include "io/mapped_file.h"

namespace ic {
namespace {

using Json = nlohmann::json;

// Real tokenizer.json files nest five levels (pre_tokenizer.pretokenizers[i].pattern.Regex); the
// bound keeps a hostile file from building a deep DOM whose destruction and dump() recurse.
constexpr int kMaxDepth = 64;

// The pre-tokenizer regexes as the checkpoints' tokenizer.json files spell them, with CR and LF
// written as the escapes \r and \n (canonical_regex turns literal ones into those; DeepSeek's
// file has literal ones, GLM's the escapes, and Oniguruma reads both alike). llama.cpp's
// llama-vocab.cpp carries the same strings for its DEEPSEEK3_LLM and CHATGLM4 pre-tokenizers
// (the latter with (?i:...) spelt out letter by letter, which misses U+017F).
constexpr std::string_view kDeepseekV3Numbers = R"(\p{N}{1,3})";
// [\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+ in UTF-8, as the file has it.
constexpr std::string_view kDeepseekV3Cjk = "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+";
constexpr std::string_view kDeepseekV3Words =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGlm4 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Lenient reads for recognising a configuration: a field of the wrong type reads as the default
// (nlohmann's value() would throw a non-ic exception instead).
std::string str_or(const Json& o, std::string_view key, std::string_view absent) {
  if (!o.is_object()) return std::string(absent);
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string(absent);
}
bool bool_or(const Json& o, std::string_view key, bool absent) {
  if (!o.is_object()) return absent;
  const auto it = o.find(key);
  return it != o.end() && it->is_boolean() ? it->get<bool>() : absent;
}

// A value for a message: its JSON text, cut short.
std::string shown(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 400) s = s.substr(0, 400) + "...";
  return s;
}

Json parse(const std::string& text, const std::string& name, size_t max_bytes) {
  IC_CHECK(text.size() <= max_bytes, "{} is {} bytes, more than the {}-byte limit", name, text.size(), max_bytes);
  auto depth_limit = [&](int depth, Json::parse_event_t, Json&) {
    IC_CHECK(depth <= kMaxDepth, "{}: JSON nests deeper than {} levels", name, kMaxDepth);
    return true;
  };
  try {
    Json j = Json::parse(text.begin(), text.end(), depth_limit);
    IC_CHECK(j.is_object(), "{} is {}, a JSON object expected", name, describe_json(j));
    return j;
  } catch (const Json::parse_error& e) {
    fail("{} is not valid JSON (near byte {}): {}", name, e.byte, e.what());
  } catch (const Json::exception& e) {
    fail("{}: {}", name, e.what());
  }
}

// Typed reads of one JSON object's fields; `where` names the object in messages
// ("tokenizer.json: model").
class Fields {
 public:
  Fields(const Json& obj, std::string where) : obj_(obj), where_(std::move(where)) {
    IC_CHECK(obj_.is_object(), "{} is {}, an object expected", where_, describe_json(obj_));
  }

  const std::string& where() const { return where_; }
  // The name of a field in messages: "tokenizer.json: model" for the root's, "...model.vocab" below.
  std::string path(std::string_view key) const {
    return where_.ends_with(':') ? fmt::format("{} {}", where_, key) : fmt::format("{}.{}", where_, key);
  }
  // Null when absent or JSON null.
  const Json* find(std::string_view key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  const Json& get(std::string_view key) const {
    const Json* v = find(key);
    IC_CHECK(v, "{} is missing", path(key));
    return *v;
  }
  std::string str(std::string_view key) const {
    const Json& v = get(key);
    IC_CHECK(v.is_string(), "{} is {}, a string expected", path(key), describe_json(v));
    return v.get<std::string>();
  }
  std::optional<bool> opt_bool(std::string_view key) const {
    const Json* v = find(key);
    if (!v) return std::nullopt;
    IC_CHECK(v->is_boolean(), "{} is {}, a boolean expected", path(key), describe_json(*v));
    return v->get<bool>();
  }
  bool flag(std::string_view key, bool absent) const { return opt_bool(key).value_or(absent); }
  // A field that must be absent, null, false or "" for this reader (it would change the encoding).
  void require_off(std::string_view key, std::string_view why) const {
    const Json* v = find(key);
    const bool off = !v || (v->is_boolean() && !v->get<bool>()) || (v->is_string() && v->get<std::string>().empty());
    IC_CHECK(off, "{} is {}: not supported ({})", path(key), shown(*v), why);
  }
  const Json& array(std::string_view key) const {
    const Json& v = get(key);
    IC_CHECK(v.is_array(), "{} is {}, an array expected", path(key), describe_json(v));
    return v;
  }

 private:
  const Json& obj_;
  std::string where_;
};

// A JSON integer in [0, limit), or an error naming `where`.
int32_t token_id(const Json& v, size_t limit, const std::string& where) {
  IC_CHECK(v.is_number_integer() || v.is_number_unsigned(), "{} is {}, a token id expected", where, describe_json(v));
  const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() < limit : v.get<int64_t>() >= 0 && v.get<int64_t>() < static_cast<int64_t>(limit);
  IC_CHECK(ok, "{} is {}, outside the token ids 0..{}", where, shown(v), limit - 1);
  return static_cast<int32_t>(v.get<int64_t>());
}

struct Added {
  int32_t id;
  std::string content;
  bool special, normalized;
};

std::vector<Added> read_added_tokens(const Fields& root) {
  std::vector<Added> added;
  const Json* list = root.find("added_tokens");
  if (!list) return added;
  IC_CHECK(list->is_array(), "{} is {}, an array expected", root.path("added_tokens"), describe_json(*list));
  IC_CHECK(list->size() <= kMaxTokenizerVocab, "{} has {} entries, more than the limit of {}",
           root.path("added_tokens"), list->size(), kMaxTokenizerVocab);
  added.reserve(list->size());
  std::unordered_set<std::string> contents;
  for (size_t i = 0; i < list->size(); ++i) {
    const Fields t((*list)[i], root.path(fmt::format("added_tokens[{}]", i)));
    Added a{token_id(t.get("id"), kMaxTokenizerVocab, t.where() + ".id"), t.str("content"), t.flag("special", false),
            t.flag("normalized", true)};
    IC_CHECK(!a.content.empty(), "{}.content is empty", t.where());
    IC_CHECK(contents.insert(a.content).second, "{}.content '{}' repeats an earlier added token", t.where(), a.content);
    for (const char* key : {"lstrip", "rstrip", "single_word"}) t.require_off(key, "the reader matches added tokens exactly");
    added.push_back(std::move(a));
  }
  return added;
}

// model: a byte-level BPE with nothing that changes how words are cut.
void read_model(const Fields& root, const std::vector<Added>& added, TokenizerData& d) {
  const Fields m(root.get("model"), root.path("model"));
  const Json* type = m.find("type");
  IC_CHECK(!type || (type->is_string() && type->get<std::string>() == "BPE"),
           "{}.type is {}: only BPE models are supported", m.where(), type ? shown(*type) : "");
  m.require_off("dropout", "BPE dropout is random");
  m.require_off("unk_token", "a byte-level BPE has a token for every byte");
  m.require_off("byte_fallback", "byte fallback is for non-byte-level vocabularies");
  m.require_off("continuing_subword_prefix", "a byte-level BPE uses none");
  m.require_off("end_of_word_suffix", "a byte-level BPE uses none");
  d.ignore_merges = m.flag("ignore_merges", false);

  const Json& vocab = m.get("vocab");
  IC_CHECK(vocab.is_object(), "{}.vocab is {}, an object expected", m.where(), describe_json(vocab));
  IC_CHECK(vocab.size() + added.size() <= kMaxTokenizerVocab,
           "{} {} vocabulary entries and {} added tokens, more than the limit of {}", root.where(), vocab.size(),
           added.size(), kMaxTokenizerVocab);
  // Ids run 0..n-1: the model's entries, then the added tokens that are not among them.
  size_t n = vocab.size();
  for (const Added& a : added) {
    const auto it = vocab.find(a.content);
    if (it == vocab.end()) {
      ++n;
      continue;
    }
    const int32_t vid = token_id(*it, kMaxTokenizerVocab, m.where() + ".vocab[\"" + a.content + "\"]");
    IC_CHECK(vid == a.id, "{} added token '{}' has id {}, but model.vocab gives it id {}", root.where(), a.content,
             a.id, vid);
  }
  d.tokens.assign(n, std::string());
  d.token_types.assign(n, kTokenNormal);
  std::vector<bool> seen(n, false);
  const auto place = [&](int32_t id, const std::string& text, const std::string& where) {
    IC_CHECK(static_cast<size_t>(id) < n, "{}: id {} is not below {}, the number of tokens (ids must run 0..{} without gaps)",
             where, id, n, n - 1);
    IC_CHECK(!seen[id], "{}: id {} is given to both '{}' and '{}'", where, id, d.tokens[id], text);
    seen[id] = true;
    d.tokens[id] = text;
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string where = m.where() + ".vocab[\"" + it.key() + "\"]";
    place(token_id(it.value(), kMaxTokenizerVocab, where), it.key(), where);
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const Added& a = added[i];
    if (!vocab.contains(a.content)) place(a.id, a.content, root.path(fmt::format("added_tokens[{}]", i)));
    d.token_types[a.id] = a.special ? kTokenControl : kTokenUserDefined;
  }

  const Json& merges = m.array("merges");
  IC_CHECK(merges.size() <= kMaxTokenizerMerges, "{}.merges has {} entries, more than the limit of {}", m.where(),
           merges.size(), kMaxTokenizerMerges);
  d.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& e = merges[i];
    if (e.is_string()) {
      d.merges.push_back(e.get<std::string>());
      continue;
    }
    // tokenizers >= 0.20 writes [left, right]; the byte-level alphabet has no space, so "left right" is unambiguous.
    const bool pair = e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string();
    IC_CHECK(pair, "{}.merges[{}] is {}, a string or a pair of strings expected", m.where(), i, shown(e));
    const std::string l = e[0].get<std::string>(), r = e[1].get<std::string>();
    IC_CHECK(l.find(' ') == std::string::npos && r.find(' ') == std::string::npos,
             "{}.merges[{}] {} has a space inside a token", m.where(), i, shown(e));
    d.merges.push_back(l + " " + r);
  }
  // HF keeps a repeated merge's last rank, the Tokenizer its first: refuse rather than differ.
  std::unordered_set<std::string_view> distinct;
  distinct.reserve(d.merges.size());
  for (size_t i = 0; i < d.merges.size(); ++i)
    IC_CHECK(distinct.insert(d.merges[i]).second, "{}.merges[{}] '{}' repeats an earlier merge", m.where(), i,
             d.merges[i]);

  // HF cuts out non-normalized added tokens first, then normalized ones in what is left; with
  // both kinds present, that order shows.
  bool any_normalized = false, any_raw = false;
  for (const Added& a : added) (a.normalized ? any_normalized : any_raw) = true;
  if (any_normalized && any_raw)
    for (const Added& a : added)
      if (a.normalized) d.second_pass_specials.push_back(a.id);
}

void read_normalizer(const Fields& root) {
  const Json* n = root.find("normalizer");
  if (!n) return;
  const Fields f(*n, root.path("normalizer"));
  const Json* list = f.find("normalizers");
  const bool empty_sequence = f.str("type") == "Sequence" && list && list->is_array() && list->empty();
  IC_CHECK(empty_sequence, "{} is {}: not supported (only null or an empty Sequence)", f.where(), shown(*n));
}

// The steps of a pre-tokenizer, nested Sequences flattened.
void flatten(const Json& p, const std::string& where, std::vector<const Json*>& out) {
  const Fields f(p, where);
  if (f.str("type") != "Sequence") {
    out.push_back(&p);
    return;
  }
  const Json& list = f.array("pretokenizers");
  for (size_t i = 0; i < list.size(); ++i) flatten(list[i], fmt::format("{}.pretokenizers[{}]", where, i), out);
}

std::string canonical_regex(std::string r) {
  std::string out;
  for (const char c : r) out += c == '\r' ? std::string(R"(\r)") : c == '\n' ? std::string(R"(\n)") : std::string(1, c);
  return out;
}

// "Split" with a regex, Isolated, not inverted: the regex, else "".
std::string split_regex(const Json& p) {
  if (str_or(p, "type", "") != "Split") return "";
  const auto pat = p.find("pattern");
  if (pat == p.end() || !pat->is_object() || !pat->contains("Regex") || !(*pat)["Regex"].is_string()) return "";
  if (str_or(p, "behavior", "") != "Isolated" || bool_or(p, "invert", true)) return "";
  return canonical_regex((*pat)["Regex"].get<std::string>());
}

// ByteLevel without a prefix space; use_regex as asked (HF's default is true).
bool byte_level(const Json& p, bool use_regex) {
  if (str_or(p, "type", "") != "ByteLevel") return false;
  const auto aps = p.find("add_prefix_space");
  const auto ur = p.find("use_regex");
  const bool regex = ur == p.end() || (ur->is_boolean() && ur->get<bool>());
  return aps != p.end() && aps->is_boolean() && !aps->get<bool>() && regex == use_regex;
}

std::string read_pre_tokenizer(const Fields& root) {
  const std::string where = root.path("pre_tokenizer");
  const Json& pre = root.get("pre_tokenizer");
  std::vector<const Json*> steps;
  flatten(pre, where, steps);
  const auto split_is = [&](size_t i, std::string_view regex) { return split_regex(*steps[i]) == canonical_regex(std::string(regex)); };
  if (steps.size() == 4 && split_is(0, kDeepseekV3Numbers) && split_is(1, kDeepseekV3Cjk) &&
      split_is(2, kDeepseekV3Words) && byte_level(*steps[3], false))
    return "deepseek-v3";
  if (steps.size() == 2 && split_is(0, kGlm4) && byte_level(*steps[1], false)) return "glm4";
  if (steps.size() == 1 && byte_level(*steps[0], true)) return "gpt2";
  const auto digits = [&](const Json& p) {
    return str_or(p, "type", "") == "Digits" && bool_or(p, "individual_digits", false);
  };
  if (steps.size() == 2 && digits(*steps[0]) && byte_level(*steps[1], true)) return "smollm";
  fail("{} is {}: not a supported pre-tokenizer (supported: DeepSeek-V3's three Split regexes then ByteLevel, "
       "GLM-4's Split regex then ByteLevel, GPT-2's ByteLevel, SmolLM's Digits then ByteLevel, each exactly as "
       "those models' tokenizer.json has it)",
       where, shown(pre));
}

// The special tokens a post-processor puts before and after the text.
struct Around {
  std::vector<int32_t> prefix, suffix;
};

void read_template(const Fields& t, Around& out) {
  const Json& single = t.array("single");
  IC_CHECK(out.prefix.empty() && out.suffix.empty(), "{}: a second template after one that adds tokens", t.where());
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const Json& item = single[i];
    const std::string where = fmt::format("{}.single[{}]", t.where(), i);
    IC_CHECK(item.is_object() && item.size() == 1, "{} is {}, a SpecialToken or Sequence expected", where, shown(item));
    if (item.contains("Sequence")) {
      IC_CHECK(!seen_a && str_or(item["Sequence"], "id", "") == "A", "{} is {}: only one $A is supported", where,
               shown(item));
      seen_a = true;
      continue;
    }
    IC_CHECK(item.contains("SpecialToken"), "{} is {}, a SpecialToken or Sequence expected", where, shown(item));
    const Fields st(item["SpecialToken"], where + ".SpecialToken");
    const std::string name = st.str("id");
    const Fields specials(t.get("special_tokens"), t.where() + ".special_tokens");
    const Fields entry(specials.get(name), specials.where() + "." + name);
    const Json& ids = entry.array("ids");
    IC_CHECK(ids.size() <= 16, "{}.ids has {} ids, more than 16", entry.where(), ids.size());
    for (size_t k = 0; k < ids.size(); ++k)
      (seen_a ? out.suffix : out.prefix)
          .push_back(token_id(ids[k], kMaxTokenizerVocab, fmt::format("{}.ids[{}]", entry.where(), k)));
    IC_CHECK(out.prefix.size() + out.suffix.size() <= 64, "{}: more than 64 tokens around the text", t.where());
  }
  IC_CHECK(seen_a, "{}.single has no $A", t.where());
}

void read_post_processor(const Json& p, const std::string& where, Around& out) {
  const Fields f(p, where);
  const std::string type = f.str("type");
  if (type == "ByteLevel") return;  // offsets only
  if (type == "TemplateProcessing") return read_template(f, out);
  IC_CHECK(type == "Sequence", "{}.type is '{}': not supported (null, ByteLevel, TemplateProcessing or a Sequence)",
           where, type);
  const Json& list = f.array("processors");
  for (size_t i = 0; i < list.size(); ++i) read_post_processor(list[i], fmt::format("{}.processors[{}]", where, i), out);
}

void read_decoder(const Fields& root) {
  const Json& dec = root.get("decoder");
  const Fields f(dec, root.path("decoder"));
  const Json* list = f.find("decoders");
  const bool ok = f.str("type") == "ByteLevel" ||
                  (f.str("type") == "Sequence" && list && list->is_array() && list->size() == 1 &&
                   str_or((*list)[0], "type", "") == "ByteLevel");
  IC_CHECK(ok, "{} is {}: only the ByteLevel decoder is supported", f.where(), shown(dec));
}

// bos_token and friends: a string, {"content": ...}, or null / absent.
std::optional<std::string> special_name(const Fields& c, std::string_view key) {
  const Json* v = c.find(key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  return Fields(*v, c.path(key)).str("content");
}

void read_config(const std::string& text, const std::string& name, const std::string& json_name, const Around& post,
                 TokenizerData& d) {
  const Json j = text.empty() ? Json::object() : parse(text, name, kMaxTokenizerConfigBytes);
  const Fields c(j, name + ":");
  c.require_off("add_eos_token", "the tokenizer appends no EOS");
  c.require_off("add_prefix_space", "transformers would then rebuild the pre-tokenizer");
  // Token texts are unique per id; look names up the way transformers' convert_tokens_to_ids does.
  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(d.tokens.size());
  for (size_t i = 0; i < d.tokens.size(); ++i) ids.emplace(d.tokens[i], static_cast<int32_t>(i));
  const auto resolve = [&](std::string_view key) {
    const std::optional<std::string> t = special_name(c, key);
    if (!t) return -1;
    const auto it = ids.find(*t);
    IC_CHECK(it != ids.end(), "{}: {} '{}' is not a token of {}", name, key, *t, json_name);
    return it->second;
  };
  const int32_t bos = resolve("bos_token");
  d.eos_id = resolve("eos_token");
  d.pad_id = resolve("pad_token");
  d.unk_id = resolve("unk_token");
  const std::optional<bool> add_bos = c.opt_bool("add_bos_token");
  if (add_bos) {
    // transformers' Llama-family classes rebuild the post-processor from add_bos_token and
    // bos_token (add_eos_token is refused above).
    IC_CHECK(!*add_bos || bos >= 0, "{}: add_bos_token is true but there is no bos_token", name);
    d.post_prefix.clear();
    if (*add_bos) d.post_prefix.push_back(bos);
    d.post_suffix.clear();
  } else {
    d.post_prefix = post.prefix;  // without the key, tokenizer.json's post-processor decides
    d.post_suffix = post.suffix;
  }
  d.add_bos = d.post_prefix.size() == 1 && d.post_suffix.empty();
  d.bos_id = bos >= 0 ? bos : d.add_bos ? d.post_prefix[0] : -1;
  IC_CHECK(!d.add_bos || d.bos_id == d.post_prefix[0], "{}: bos_token is token {}, but {}'s post_processor prepends {}",
           name, d.bos_id, json_name, d.post_prefix[0]);

  if (const Json* t = c.find("chat_template")) {
    if (t->is_string()) {
      d.chat_template = t->get<std::string>();
    } else {
      // Several named templates: the default one is what transformers renders.
      IC_CHECK(t->is_array(), "{}: chat_template is {}, a string or a list of named templates expected", name, describe_json(*t));
      for (const Json& e : *t)
        if (str_or(e, "name", "") == "default") d.chat_template = str_or(e, "template", "");
      IC_CHECK(!d.chat_template.empty(), "{}: chat_template lists no template named 'default'", name);
    }
  }
  if (const Json* dec = c.find("added_tokens_decoder")) {
    IC_CHECK(dec->is_object(), "{}: added_tokens_decoder is {}, an object expected", name, describe_json(*dec));
    for (auto it = dec->begin(); it != dec->end(); ++it) {
      const std::string where = fmt::format("{}: added_tokens_decoder[\"{}\"]", name, it.key());
      size_t pos = 0;
      uint64_t id = 0;
      try {
        id = std::stoull(it.key(), &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      IC_CHECK(pos == it.key().size() && !it.key().empty(), "{}: the key is not a token id", where);
      IC_CHECK(id < d.tokens.size(), "{}: {} has no token {}", where, json_name, id);
      const std::string content = Fields(it.value(), where).str("content");
      IC_CHECK(content == d.tokens[id], "{}: content '{}' differs from {}'s token {} '{}'", where, content, json_name,
               id, d.tokens[id]);
    }
  }
}

TokenizerData from_json(const Json& j, const std::string& tokenizer_config_json, const std::string& json_name,
                        const std::string& config_name) {
  const Fields root(j, json_name + ":");
  root.require_off("truncation", "encode returns every token");
  root.require_off("padding", "encode returns every token");
  TokenizerData d;
  d.model = "gpt2";  // byte-level BPE, in the GGUF naming the Tokenizer uses
  d.hf_byte_level_decode = true;
  const std::vector<Added> added = read_added_tokens(root);
  read_model(root, added, d);
  read_normalizer(root);
  d.pre = read_pre_tokenizer(root);
  Around post;
  if (const Json* p = root.find("post_processor")) read_post_processor(*p, root.path("post_processor"), post);
  for (const int32_t id : post.prefix) IC_CHECK(id < static_cast<int64_t>(d.tokens.size()), "{}: token id {} is not below {}", root.path("post_processor"), id, d.tokens.size());
  for (const int32_t id : post.suffix) IC_CHECK(id < static_cast<int64_t>(d.tokens.size()), "{}: token id {} is not below {}", root.path("post_processor"), id, d.tokens.size());
  read_decoder(root);
  read_config(tokenizer_config_json, config_name, json_name, post, d);
  return d;
}

}  // namespace

TokenizerData tokenizer_data_from_json(const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                                       const std::string& json_name, const std::string& config_name) {
  const Json j = parse(tokenizer_json, json_name, kMaxTokenizerJsonBytes);
  try {
    return from_json(j, tokenizer_config_json, json_name, config_name);
  } catch (const Json::exception& e) {
    // The reads check types first; this is the net under them, so no nlohmann exception escapes.
    fail("{}: {}", json_name, e.what());
  }
}

TokenizerData tokenizer_data_from_json_files(const std::string& json_path, const std::string& config_path) {
  const std::string json = read_file_bounded(json_path, kMaxTokenizerJsonBytes);
  const std::string config = config_path.empty() ? std::string() : read_file_bounded(config_path, kMaxTokenizerConfigBytes);
  return tokenizer_data_from_json(json, config, json_path, config_path.empty() ? "tokenizer_config.json" : config_path);
}

}  // namespace ic
