#include "indexcache/eval_config.h"

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace ic {

namespace {
int64_t parse_int(std::string_view s, std::string_view what, std::string_view whole) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  IC_CHECK(ec == std::errc() && end == s.data() + s.size() && !s.empty(), "pattern '{}': {} '{}' is not an integer",
           whole, what, s);
  return v;
}
}  // namespace

PatternChoice PatternChoice::parse(std::string_view text) {
  PatternChoice c;
  IC_CHECK(!text.empty(), "empty pattern after '@' (give FSSF..., freq=N[,offset=M] or search=FILE.json:KEY)");
  if (text.starts_with("freq=")) {
    c.kind = Kind::kFreq;
    std::string_view rest = text.substr(5);
    const size_t comma = rest.find(',');
    c.freq = parse_int(rest.substr(0, comma), "freq", text);
    if (comma != std::string_view::npos) {
      const std::string_view opt = rest.substr(comma + 1);
      IC_CHECK(opt.starts_with("offset="), "pattern '{}': after freq=N only ',offset=M' may follow, got '{}'", text, opt);
      c.offset = parse_int(opt.substr(7), "offset", text);
    }
    IC_CHECK(c.freq >= 1 && c.offset >= 1, "pattern '{}': freq and offset must be >= 1", text);
    return c;
  }
  if (text.starts_with("search=")) {
    c.kind = Kind::kSearch;
    const std::string_view rest = text.substr(7);
    const size_t colon = rest.rfind(':');
    IC_CHECK(colon != std::string_view::npos && colon > 0 && colon + 1 < rest.size(),
             "pattern '{}': search= needs FILE.json:KEY (KEY as in the file's \"patterns\", e.g. 1/4)", text);
    c.search_file = rest.substr(0, colon);
    c.search_key = rest.substr(colon + 1);
    return c;
  }
  IC_CHECK(text.find('=') == std::string_view::npos,
           "pattern '{}': unknown modifier (known: freq=N[,offset=M], search=FILE.json:KEY, or F/S letters)", text);
  for (char ch : text)
    IC_CHECK(ch == 'F' || ch == 'f' || ch == 'S' || ch == 's' || ch == '_' || ch == ' ',
             "pattern '{}': '{}' is neither F nor S (or give freq=N / search=FILE.json:KEY)", text, ch);
  c.kind = Kind::kLetters;
  c.letters = text;
  return c;
}

std::optional<LayerPattern> PatternChoice::resolve(int64_t n_layers) const {
  switch (kind) {
    case Kind::kFile:
      return std::nullopt;
    case Kind::kLetters:
      return LayerPattern::parse(letters, n_layers);
    case Kind::kFreq:
      return LayerPattern::from_freq(n_layers, freq, offset);
    case Kind::kSearch: {
      std::ifstream in(search_file);
      IC_CHECK(in.good(), "cannot open search result '{}'", search_file);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        fail("search result '{}' is not JSON: {}", search_file, e.what());
      }
      IC_CHECK(j.is_object() && j.contains("patterns") && j["patterns"].is_object(),
               "search result '{}' has no \"patterns\" object", search_file);
      const nlohmann::json& p = j["patterns"];
      if (!p.contains(search_key) || !p[search_key].is_string()) {
        std::string keys;
        for (const auto& [k, v] : p.items()) keys += (keys.empty() ? "" : ", ") + k;
        fail("search result '{}' has no pattern '{}' (it has: {})", search_file, search_key, keys);
      }
      // A search of another model (other layer count) fails here: say which file and key.
      try {
        return LayerPattern::parse(p[search_key].get<std::string>(), n_layers);
      } catch (const Error& e) {
        fail("search result '{}', pattern '{}': {}", search_file, search_key, e.what());
      }
    }
  }
  return std::nullopt;
}

EvalConfig EvalConfig::parse(std::string_view arg) {
  const size_t eq = arg.find('=');
  IC_CHECK(eq != std::string_view::npos, "config '{}': expected NAME=SPEC (SPEC: dense or INDEXERS[@PATTERN])", arg);
  EvalConfig c;
  c.name = arg.substr(0, eq);
  c.spec = arg.substr(eq + 1);
  IC_CHECK(!c.name.empty(), "config '{}': the name before '=' is empty", arg);
  IC_CHECK(!c.spec.empty(), "config '{}': the spec after '=' is empty (dense or INDEXERS[@PATTERN])", arg);
  if (c.spec == "dense") {
    c.dense = true;
    return c;
  }
  const size_t at = c.spec.find('@');
  c.indexers = c.spec.substr(0, at);
  IC_CHECK(!c.indexers.empty(), "config '{}': no indexer file before '@'", arg);
  if (at != std::string::npos) c.pattern = PatternChoice::parse(std::string_view(c.spec).substr(at + 1));
  c.checkpoint = c.indexers == "model";
  return c;
}

std::shared_ptr<const DsaSpec> EvalConfig::load(int64_t n_layers, int64_t dim, std::optional<int64_t> topk) const {
  if (dense) return nullptr;
  IC_CHECK(!checkpoint, "config '{}': 'model' names a DSA checkpoint's own indexers, not an indexer file", name);
  return std::make_shared<DsaSpec>(load_indexers(indexers, n_layers, dim, pattern.resolve(n_layers), topk));
}

std::vector<EvalConfig> parse_eval_configs(const std::vector<std::string>& args) {
  std::vector<EvalConfig> out;
  std::set<std::string> names;
  for (const std::string& a : args) {
    out.push_back(EvalConfig::parse(a));
    IC_CHECK(names.insert(out.back().name).second, "config name '{}' is given twice", out.back().name);
  }
  return out;
}

}  // namespace ic
