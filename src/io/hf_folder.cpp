// HF model folder: config.json reads, the fp8 quantisation config, and weight reads that check
// shapes and dequantise DeepSeek's block-scaled fp8. The safetensors layer validates files and
// the index (missing shards, truncation, offsets); this layer adds what only the folder knows:
// what shape the caller expects and which scale tensor belongs to which fp8 weight.
#include "io/hf_folder.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "io/json_describe.h"
#include "io/mapped_file.h"

namespace ic::hf {

namespace {

namespace fs = std::filesystem;
// Not `json`: inside Config that name is the member function.
using Json = nlohmann::json;

// Real configs nest three or four levels (rope_scaling, quantization_config); the bound keeps
// a hostile file from building a deep DOM whose destruction and dump() recurse.
constexpr int kMaxConfigDepth = 64;

// The value as int64, or nullopt when it is not a JSON integer that fits.
std::optional<int64_t> as_int64(const Json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// ceil(n / b) for n >= 0, b >= 1, without the overflow of (n + b - 1) / b.
int64_t blocks(int64_t n, int64_t b) { return n == 0 ? 0 : (n - 1) / b + 1; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Config

Config Config::load(const std::string& path) {
  return parse(read_file_bounded(path, kMaxConfigBytes, "a config file"), path);
}

Config Config::parse(std::string_view json_text, std::string name) {
  IC_CHECK(json_text.size() <= static_cast<size_t>(kMaxConfigBytes),
           "{} is {} bytes, more than the {}-byte limit for a config file", name,
           json_text.size(), kMaxConfigBytes);
  auto depth_limit = [&](int depth, Json::parse_event_t, Json&) {
    IC_CHECK(depth <= kMaxConfigDepth, "{}: JSON nests deeper than {} levels", name,
             kMaxConfigDepth);
    return true;
  };
  Json j;
  try {
    j = Json::parse(json_text.begin(), json_text.end(), depth_limit);
  } catch (const Json::parse_error& e) {
    fail("{} is not valid JSON (near byte {}): {}", name, e.byte, e.what());
  } catch (const Json::exception& e) {
    fail("{}: {}", name, e.what());
  }
  IC_CHECK(j.is_object(), "{} is {}, a JSON object expected", name, describe_json(j));
  Config c;
  c.path_ = std::move(name);
  c.json_ = std::make_shared<const Json>(std::move(j));
  return c;
}

std::string Config::where(std::string_view key) const {
  return fmt::format("{}: '{}{}'", path_, prefix_, key);
}

const Json* Config::find(std::string_view key) const {
  auto it = json_->find(std::string(key));
  if (it == json_->end() || it->is_null()) return nullptr;
  return &*it;
}

const Json& Config::need(std::string_view key, const char* expected) const {
  const Json* v = find(key);
  if (!v) {
    const bool present = json_->contains(std::string(key));
    fail("{} is {}, {} expected", where(key), present ? "null" : "missing", expected);
  }
  return *v;
}

bool Config::has(std::string_view key) const { return find(key) != nullptr; }

int64_t Config::get_int(std::string_view key) const {
  const Json& v = need(key, "an integer");
  const std::optional<int64_t> i = as_int64(v);
  if (!i && v.is_number_unsigned()) fail("{} is {}, which does not fit in int64", where(key), describe_json(v));
  IC_CHECK(i.has_value(), "{} is {}, an integer expected", where(key), describe_json(v));
  return *i;
}

int64_t Config::get_int_or(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double Config::get_float(std::string_view key) const {
  const Json& v = need(key, "a number");
  IC_CHECK(v.is_number(), "{} is {}, a number expected", where(key), describe_json(v));
  return v.get<double>();
}

double Config::get_float_or(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool Config::get_bool_or(std::string_view key, bool fallback) const {
  const Json* v = find(key);
  if (!v) return fallback;
  IC_CHECK(v->is_boolean(), "{} is {}, a boolean expected", where(key), describe_json(*v));
  return v->get<bool>();
}

std::string Config::get_string(std::string_view key) const {
  const Json& v = need(key, "a string");
  IC_CHECK(v.is_string(), "{} is {}, a string expected", where(key), describe_json(v));
  return v.get<std::string>();
}

std::string Config::get_string_or(std::string_view key, std::string fallback) const {
  return has(key) ? get_string(key) : fallback;
}

std::vector<std::string> Config::get_strings(std::string_view key) const {
  const Json& v = need(key, "an array of strings");
  IC_CHECK(v.is_array(), "{} is {}, an array of strings expected", where(key), describe_json(v));
  std::vector<std::string> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    IC_CHECK(v[i].is_string(), "{}[{}] is {}, a string expected", where(key), i, describe_json(v[i]));
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

std::vector<int64_t> Config::get_ints(std::string_view key) const {
  const Json& v = need(key, "an array of integers");
  IC_CHECK(v.is_array(), "{} is {}, an array of integers expected", where(key), describe_json(v));
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const std::optional<int64_t> x = as_int64(v[i]);
    IC_CHECK(x.has_value(), "{}[{}] is {}, an integer expected", where(key), i, describe_json(v[i]));
    out.push_back(*x);
  }
  return out;
}

Config Config::object(std::string_view key) const {
  const Json& v = need(key, "an object");
  IC_CHECK(v.is_object(), "{} is {}, an object expected", where(key), describe_json(v));
  Config c;
  c.path_ = path_;
  c.prefix_ = fmt::format("{}{}.", prefix_, key);
  c.json_ = std::shared_ptr<const Json>(json_, &v);  // aliases: keeps the root document alive
  return c;
}

std::string Config::architecture() const {
  const std::vector<std::string> a = get_strings("architectures");
  IC_CHECK(!a.empty(), "{} is an empty array, one architecture name expected",
           where("architectures"));
  return a[0];
}

// ---------------------------------------------------------------------------------------
// Quantization

Quantization Quantization::from_config(const Config& c) {
  Quantization q;
  if (!c.has("quantization_config")) return q;
  const Config qc = c.object("quantization_config");
  const std::string method = qc.get_string("quant_method");
  IC_CHECK(method == "fp8",
           "{} is \"{}\", which indexcache does not support (it reads unquantised bf16/f16/f32 "
           "weights and block-scaled fp8, quant_method \"fp8\")", qc.where("quant_method"), method);
  const std::string fmt_name = qc.get_string_or("fmt", "e4m3");
  IC_CHECK(fmt_name == "e4m3", "{} is \"{}\"; only \"e4m3\" fp8 weights are supported",
           qc.where("fmt"), fmt_name);
  // Static activation scales come as per-layer input_scale tensors that no DSA checkpoint
  // ships; dynamic quantisation needs nothing from the folder.
  const std::string act = qc.get_string_or("activation_scheme", "dynamic");
  IC_CHECK(act == "dynamic", "{} is \"{}\"; only \"dynamic\" is supported",
           qc.where("activation_scheme"), act);
  // Without a block size the fp8 checkpoint is per-tensor scaled (weight_scale tensors), a
  // layout DeepSeek does not use.
  IC_CHECK(qc.has("weight_block_size"),
           "{} is missing: per-tensor fp8 is not supported, only block scales "
           "(weight_block_size [128, 128] as DeepSeek ships them)", qc.where("weight_block_size"));
  const std::vector<int64_t> block = qc.get_ints("weight_block_size");
  IC_CHECK(block.size() == 2 && block[0] >= 1 && block[1] >= 1,
           "{} is {}, two positive integers [rows, cols] expected", qc.where("weight_block_size"),
           dims_str(block));
  const std::string scale_fmt = qc.get_string_or("scale_fmt", "");
  IC_CHECK(scale_fmt.empty() || scale_fmt == "ue8m0",
           "{} is \"{}\"; only \"ue8m0\" (power-of-two scales) or no scale_fmt is supported",
           qc.where("scale_fmt"), scale_fmt);
  q.fp8 = true;
  q.block_rows = block[0];
  q.block_cols = block[1];
  q.ue8m0_scales = scale_fmt == "ue8m0";
  return q;
}

// ---------------------------------------------------------------------------------------
// Folder

namespace {

// E8M0 (an exponent byte, 2^(b - 127); 0xFF is NaN) into f32; the NaN is an error.
void decode_e8m0(const safetensors::TensorInfo& s, const std::string& path, float* out) {
  for (int64_t i = 0; i < s.numel(); ++i) {
    const uint8_t b = s.data[i];
    IC_CHECK(b != 0xFF, "scale tensor '{}' in {}: entry {} is the E8M0 NaN (0xFF)", s.name, path, i);
    out[i] = std::ldexp(1.0f, static_cast<int>(b) - 127);
  }
}

// F32 values of a scale tensor, each checked: finite and non-negative (an all-zero block may
// have scale 0), and a power of two when the config says ue8m0.
std::vector<float> scale_values(const safetensors::File& shard, const safetensors::TensorInfo& s,
                                bool ue8m0) {
  const int64_t n = s.numel();
  std::vector<float> v(static_cast<size_t>(n));
  if (n == 0) return v;  // an empty tensor may have no storage to read
  if (s.dtype_name == "F8_E8M0") {
    decode_e8m0(s, shard.path(), v.data());
    return v;
  }
  const Tensor t = shard.read_f32(s);  // F32 or BF16 (checked by the caller)
  const float* p = t.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float x = p[i];
    IC_CHECK(std::isfinite(x) && x >= 0.0f,
             "scale tensor '{}' in {}: entry {} is {}, a finite non-negative scale expected",
             s.name, shard.path(), i, x);
    if (ue8m0) {
      int e = 0;
      IC_CHECK(x > 0.0f && std::frexp(x, &e) == 0.5f,
               "scale tensor '{}' in {}: entry {} is {}, but scale_fmt \"ue8m0\" needs a power "
               "of two", s.name, shard.path(), i, x);
    }
    v[i] = x;
  }
  return v;
}

}  // namespace

Folder Folder::open(const std::string& dir) {
  std::error_code ec;
  IC_CHECK(fs::is_directory(dir, ec), "model folder {} does not exist or is not a directory", dir);
  const std::string config_path = (fs::path(dir) / "config.json").string();
  IC_CHECK(fs::exists(config_path, ec), "model folder {} has no config.json", dir);
  Folder f;
  f.dir_ = dir;
  f.config_ = Config::load(config_path);
  f.quant_ = Quantization::from_config(f.config_);
  f.weights_ = std::make_shared<safetensors::ShardedModel>(safetensors::ShardedModel::open(dir));
  return f;
}

std::string Folder::tokenizer_json() const {
  std::error_code ec;
  const fs::path p = fs::path(dir_) / "tokenizer.json";
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}

std::string Folder::tokenizer_config_json() const {
  std::error_code ec;
  const fs::path p = fs::path(dir_) / "tokenizer_config.json";
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}

bool Folder::has(std::string_view name) const { return weights_->has(name); }

std::vector<int64_t> Folder::shape(std::string_view name) const {
  return weights_->tensor(name).dims;
}

std::string Folder::dtype_name(std::string_view name) const {
  return weights_->tensor(name).dtype_name;
}

std::string Folder::scale_name(std::string_view name) { return std::string(name) + "_scale_inv"; }

std::string Folder::shard_path(std::string_view name) const {
  auto it = weights_->weight_map().find(name);
  IC_ASSERT(it != weights_->weight_map().end());
  return (fs::path(weights_->dir()) / it->second).string();
}

const safetensors::TensorInfo& Folder::checked_scale(const safetensors::TensorInfo& w) const {
  IC_CHECK(quant_.fp8,
           "tensor '{}' in {} is F8_E4M3, but {} declares no fp8 quantization_config", w.name,
           shard_path(w.name), config_.path());
  const std::string sname = scale_name(w.name);
  IC_CHECK(weights_->has(sname), "fp8 tensor '{}' in {} has no block scales: '{}' is not in {}",
           w.name, shard_path(w.name), sname, weights_->path());
  const safetensors::TensorInfo& s = weights_->tensor(sname);
  IC_CHECK(s.dtype_name == "F32" || s.dtype_name == "BF16" || s.dtype_name == "F8_E8M0",
           "scale tensor '{}' in {} is {}, F32 expected (or BF16, F8_E8M0)", sname,
           shard_path(sname), s.dtype_name);
  IC_CHECK(w.dims.size() >= 2,
           "fp8 tensor '{}' in {} has shape {}; block scales need a weight of rank 2 or more",
           w.name, shard_path(w.name), dims_str(w.dims));
  std::vector<int64_t> want(w.dims.begin(), w.dims.end() - 2);
  want.push_back(blocks(w.dims[w.dims.size() - 2], quant_.block_rows));
  want.push_back(blocks(w.dims.back(), quant_.block_cols));
  IC_CHECK(s.dims == want,
           "scale tensor '{}' in {} has shape {}, but fp8 weight '{}' of shape {} in {} x {} "
           "blocks needs {}", sname, shard_path(sname), dims_str(s.dims), w.name,
           dims_str(w.dims), quant_.block_rows, quant_.block_cols, dims_str(want));
  return s;
}

Tensor Folder::read_f32(std::string_view name, const std::vector<int64_t>& expected) const {
  const safetensors::TensorInfo& t = weights_->tensor(name);
  IC_CHECK(t.dims == expected, "tensor '{}' in {} has shape {} in the checkpoint, {} expected",
           t.name, shard_path(name), dims_str(t.dims), dims_str(expected));
  if (t.dtype_name == "F8_E8M0") {  // a scale tensor read on its own
    Shape shape;
    try {
      shape = t.shape();
    } catch (const Error& e) {
      fail("{}: {}", shard_path(name), e.what());
    }
    Tensor out = Tensor::empty(shape, DType::F32);
    if (t.numel() > 0) decode_e8m0(t, shard_path(name), out.data<float>());
    return out;
  }
  if (t.dtype_name != "F8_E4M3") {
    IC_CHECK(t.dtype_name.rfind("F8_", 0) != 0,
             "tensor '{}' in {} is {}; the only fp8 tensors indexcache reads are F8_E4M3 weights "
             "with block scales and F8_E8M0 scales", t.name, shard_path(name), t.dtype_name);
    return weights_->read_f32(name);  // F32/F16/BF16, or an error naming the dtype
  }
  const safetensors::TensorInfo& s = checked_scale(t);
  const safetensors::File& wshard = weights_->shard(weights_->weight_map().find(name)->second);
  const safetensors::File& sshard =
      weights_->shard(weights_->weight_map().find(s.name)->second);
  const std::vector<float> scale = scale_values(sshard, s, quant_.ue8m0_scales);
  Tensor out = wshard.read_f32(t);  // the e4m3 values, not yet scaled
  if (t.numel() == 0) return out;     // then the other dims may multiply past int64
  float* w = out.data<float>();
  const int64_t rows = t.dims[t.dims.size() - 2], cols = t.dims.back();
  const int64_t sr = blocks(rows, quant_.block_rows), sc = blocks(cols, quant_.block_cols);
  const int64_t batch = t.numel() / (rows * cols);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i) {
      float* row = w + (b * rows + i) * cols;
      const float* srow = scale.data() + (b * sr + i / quant_.block_rows) * sc;
      for (int64_t j = 0; j < cols; ++j) row[j] *= srow[j / quant_.block_cols];
    }
  return out;
}

void Folder::check_all() const {
  for (const auto& [name, shard] : weights_->weight_map()) {
    const safetensors::TensorInfo& t = weights_->tensor(name);
    if (t.dtype_name == "F8_E4M3") checked_scale(t);
  }
}

}  // namespace ic::hf
