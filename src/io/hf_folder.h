#pragma once
// An HF model folder as the DSA family ships it: config.json, model.safetensors.index.json with
// its shards (or one model.safetensors), tokenizer.json and tokenizer_config.json. Weights are
// bf16, f16, f32, or fp8 e4m3 with 128 x 128 block scales in a sibling tensor
// "<name>_scale_inv" (F32 [ceil(rows/128), ceil(cols/128)], the factor that multiplies the fp8
// values back: w = fp8 * scale_inv), as DeepSeek ships them. Every malformed input is an
// ic::Error naming the file and the key or tensor: a missing or unparsable config.json, a
// missing shard, a tensor whose shape disagrees with what the caller expects, a scale tensor of
// the wrong block count or dtype, an unsupported quantisation.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace ic::hf {

// Typed reads of config.json with errors that name the file and the key.
class Config {
 public:
  // Parses `path` (config.json); throws naming the file on bad JSON or a non-object.
  static Config load(const std::string& path);
  static Config parse(std::string_view json_text, std::string name = "<config.json>");

  const std::string& path() const { return path_; }
  const nlohmann::json& json() const { return *json_; }
  bool has(std::string_view key) const;       // present and not null
  int64_t get_int(std::string_view key) const;  // throws when absent, null or not an integer
  int64_t get_int_or(std::string_view key, int64_t fallback) const;  // fallback when absent or null
  double get_float(std::string_view key) const;  // integers accepted
  double get_float_or(std::string_view key, double fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string_or(std::string_view key, std::string fallback) const;
  std::vector<std::string> get_strings(std::string_view key) const;  // a JSON array of strings
  // The first entry of "architectures" (throws when absent or empty).
  std::string architecture() const;

 private:
  std::string path_;
  std::shared_ptr<const nlohmann::json> json_;
};

// Weight quantisation named by config.json's "quantization_config": none, or DeepSeek's fp8
// ("quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]). Anything else is an
// error naming the method.
struct Quantization {
  bool fp8 = false;
  int64_t block_rows = 128, block_cols = 128;
  static Quantization from_config(const Config& c);
};

class Folder {
 public:
  // Opens `dir`: config.json (required) and the weights (index + shards, or model.safetensors).
  static Folder open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const Config& config() const { return config_; }
  const Quantization& quantization() const { return quant_; }
  const safetensors::ShardedModel& weights() const { return *weights_; }
  // Paths of tokenizer.json / tokenizer_config.json in the folder, "" when absent.
  std::string tokenizer_json() const;
  std::string tokenizer_config_json() const;

  bool has(std::string_view name) const;
  // The stored shape of a tensor; throws naming the tensor and the index when absent.
  std::vector<int64_t> shape(std::string_view name) const;
  // A new F32 host tensor of `name`, checked against `expected` (row-major dims; the error names
  // the tensor, its shard and both shapes). BF16/F16/F32 convert; F8_E4M3 is multiplied by its
  // "<name>_scale_inv" block scales, which must exist, be F32 (or BF16) and have
  // [ceil(rows/block), ceil(cols/block)] entries for a 2-D weight.
  Tensor read_f32(std::string_view name, const std::vector<int64_t>& expected) const;
  // The checkpoint's storage dtype of a tensor ("BF16", "F8_E4M3", ...).
  std::string dtype_name(std::string_view name) const;

 private:
  std::string dir_;
  Config config_;
  Quantization quant_;
  std::shared_ptr<safetensors::ShardedModel> weights_;
};

}  // namespace ic::hf
