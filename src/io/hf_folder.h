#pragma once
// An HF model folder as the DSA family ships it: config.json, model.safetensors.index.json with
// its shards (or one model.safetensors), tokenizer.json and tokenizer_config.json. Weights are
// bf16, f16, f32, or fp8 e4m3 with block scales in a sibling tensor "<name>_scale_inv"
// ([ceil(rows/block_rows), ceil(cols/block_cols)], the factor that multiplies the fp8 values
// back: w = fp8 * scale_inv), as DeepSeek ships them. Every malformed input is an ic::Error
// naming the file and the key or tensor: a missing or unparsable config.json, a missing shard,
// a tensor whose shape disagrees with what the caller expects, a scale tensor of the wrong
// block count or dtype, an unsupported quantisation.
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace ic::hf {

// Largest config.json the reader accepts (real ones are a few KB; GLM-5.2's per-layer lists
// make it ~10 KB), so a hostile file cannot make the parser allocate gigabytes.
constexpr int64_t kMaxConfigBytes = 16 << 20;

// Typed reads of config.json with errors that name the file and the key:
//   "/m/config.json: 'num_hidden_layers' is a string, an integer expected".
// A Config may also be a sub-object ("quantization_config"); its keys are then named with the
// path from the file's root ('quantization_config.fmt').
class Config {
 public:
  // Parses `path` (config.json); throws naming the file when it is missing, too large, not
  // JSON, nested deeper than 64 levels or not an object.
  static Config load(const std::string& path);
  static Config parse(std::string_view json_text, std::string name = "<config.json>");

  const std::string& path() const { return path_; }
  const nlohmann::json& json() const { return *json_; }
  bool has(std::string_view key) const;         // present and not null
  int64_t get_int(std::string_view key) const;  // throws when absent, null or not an integer
  int64_t get_int_or(std::string_view key, int64_t fallback) const;  // fallback when absent or null
  double get_float(std::string_view key) const;  // integers accepted
  double get_float_or(std::string_view key, double fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string_or(std::string_view key, std::string fallback) const;
  std::vector<std::string> get_strings(std::string_view key) const;  // a JSON array of strings
  std::vector<int64_t> get_ints(std::string_view key) const;         // a JSON array of integers
  // A JSON object under `key` as a Config of its own (throws when absent, null or not an object).
  Config object(std::string_view key) const;
  // The first entry of "architectures" (throws when absent or empty).
  std::string architecture() const;

  // "<path>: '<prefix><key>'", the way every message names a key.
  std::string where(std::string_view key) const;

 private:
  const nlohmann::json* find(std::string_view key) const;  // null when absent or null
  const nlohmann::json& need(std::string_view key, const char* expected) const;

  std::string path_;
  std::string prefix_;  // "" at the root, "quantization_config." below it
  std::shared_ptr<const nlohmann::json> json_;  // may alias into the root document
};

// Weight quantisation named by config.json's "quantization_config": none, or DeepSeek's fp8
// ("quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
// "weight_block_size": [128, 128], optionally "scale_fmt": "ue8m0"). Anything else is an
// error naming the method or the key.
struct Quantization {
  bool fp8 = false;
  int64_t block_rows = 128, block_cols = 128;
  // "scale_fmt": "ue8m0": every scale is a power of two (DeepSeek-V3.1+ stores them as F32
  // all the same); the reader checks that it is.
  bool ue8m0_scales = false;
  static Quantization from_config(const Config& c);
};

class Folder {
 public:
  // Opens `dir`: config.json (required), its quantization_config, and the weights (index +
  // every shard it names must exist, or model.safetensors). Shards are mapped on first use.
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
  // "<name>_scale_inv" block scales, which must exist, be F32 (or BF16, or F8_E8M0) with finite
  // non-negative values, and have [..., ceil(rows/block), ceil(cols/block)] entries for a weight
  // of rank >= 2 (leading dims, as in stacked experts, must match). An F8_E4M3 tensor in a
  // folder whose config declares no fp8 quantisation is an error.
  Tensor read_f32(std::string_view name, const std::vector<int64_t>& expected) const;
  // The checkpoint's storage dtype of a tensor ("BF16", "F8_E4M3", ...).
  std::string dtype_name(std::string_view name) const;
  // The scale tensor's name of an fp8 weight ("<name>_scale_inv").
  static std::string scale_name(std::string_view name);

  // Opens every shard and checks every tensor the index names: it is in its shard, and every
  // F8_E4M3 one has a scale tensor of the right dtype and block count. read_f32 checks the same
  // per tensor; this finds a broken folder before a long load.
  void check_all() const;

 private:
  // The scale tensor of an fp8 weight, checked against the weight's dims.
  const safetensors::TensorInfo& checked_scale(const safetensors::TensorInfo& w) const;
  std::string shard_path(std::string_view name) const;

  std::string dir_;
  Config config_;
  Quantization quant_;
  std::shared_ptr<safetensors::ShardedModel> weights_;
};

}  // namespace ic::hf
