#pragma once
// Named model configurations for evaluation, one per `--config NAME=SPEC`:
//   dense                                   the model without indexers
//   INDEXERS.safetensors                    DSA with the file's own pattern
//   INDEXERS.safetensors@FSSF...            an explicit pattern (one letter per layer)
//   INDEXERS.safetensors@freq=4[,offset=1]  the index_topk_freq convention
//   INDEXERS.safetensors@search=FILE.json:1/4   a pattern of `indexcache search`'s JSON,
//                                           {"patterns": {"1/2": "FSF...", "1/4": ...}}
//   model[@PATTERN]                         a DSA checkpoint's own indexers, under its
//                                           config.json pattern or the given one
// The indexer path must not contain '@'. The same modifier grammar (after the '@') names a
// pattern elsewhere (`indexcache overlap --pattern`).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/layer_pattern.h"
#include "model/dsa.h"

namespace ic {

struct PatternChoice {
  enum class Kind { kFile, kLetters, kFreq, kSearch };
  Kind kind = Kind::kFile;  // kFile: the indexer file's own pattern
  std::string letters;      // kLetters
  int64_t freq = 0, offset = 1;  // kFreq
  std::string search_file, search_key;  // kSearch

  // "FSSF...", "freq=N", "freq=N,offset=M" or "search=FILE:KEY". Throws ic::Error on anything else.
  static PatternChoice parse(std::string_view text);
  // nullopt for kFile; the search file is read here. Throws on a bad pattern or a missing key.
  std::optional<LayerPattern> resolve(int64_t n_layers) const;
};

struct EvalConfig {
  std::string name;
  std::string spec;  // as given, for the record
  bool dense = false;
  bool checkpoint = false;  // "model[@...]": the DSA checkpoint's own indexers
  std::string indexers;
  PatternChoice pattern;

  // "NAME=SPEC". Throws ic::Error naming the argument and what is wrong.
  static EvalConfig parse(std::string_view arg);
  // Null for dense; else the loaded spec (topk: override of the file's k).
  std::shared_ptr<const DsaSpec> load(int64_t n_layers, int64_t dim, std::optional<int64_t> topk) const;
};

// Each argument parsed; throws on a repeated name.
std::vector<EvalConfig> parse_eval_configs(const std::vector<std::string>& args);

}  // namespace ic
