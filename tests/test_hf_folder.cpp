// HF model folders built here in a temp dir: config.json reads and their errors, bf16/f16/f32
// weights, fp8 e4m3 with block scales (checked against a dequantisation written out below, and
// against the values that were quantised), a two-shard index, and every bad-input error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"
#include "test_util.h"

namespace ic::hf {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace st = ic::safetensors;

using test::error_of;
using test::TempDir;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

const json kFp8Quant = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                        {"weight_block_size", {128, 128}}};

void write_config(const TempDir& d, json extra = json::object()) {
  json c = {{"architectures", {"DeepseekV32ForCausalLM"}}, {"num_hidden_layers", 2}};
  c.update(extra);
  write_text(d / "config.json", c.dump(2));
}

// An independent e4m3fn decode (sign, 4 exponent bits biased by 7, 3 mantissa bits, subnormals
// at exponent 0, S.1111.111 = NaN), for the dequantisation reference.
float e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return NAN;
  const double mag = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1 + m / 8.0) * std::pow(2.0, e - 7);
  return static_cast<float>((b & 0x80) ? -mag : mag);
}

std::vector<float> random_values(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = g(rng);
  return v;
}

// A block-scaled fp8 weight as DeepSeek makes one: per block, scale = amax / 448 (or the next
// power of two for ue8m0), q = e4m3(w / scale). dims = [..., rows, cols].
struct Fp8Weight {
  std::vector<int64_t> dims, scale_dims;
  std::vector<float> original;  // what was quantised
  Tensor q;                     // F8_E4M3
  std::vector<float> scale;     // [..., ceil(rows/br), ceil(cols/bc)]
};

Fp8Weight make_fp8(std::vector<int64_t> dims, int64_t br, int64_t bc, bool ue8m0, std::mt19937& rng) {
  Fp8Weight w;
  w.dims = dims;
  const int64_t rows = dims[dims.size() - 2], cols = dims.back();
  int64_t batch = 1;
  for (size_t i = 0; i + 2 < dims.size(); ++i) batch *= dims[i];
  const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
  w.scale_dims.assign(dims.begin(), dims.end() - 2);
  w.scale_dims.push_back(sr);
  w.scale_dims.push_back(sc);
  w.original = random_values(batch * rows * cols, rng, 0.05f);
  // Give blocks very different ranges so a wrong block index shows.
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        w.original[(b * rows + i) * cols + j] *= static_cast<float>(1 + 7 * ((i / br + 3 * (j / bc) + b) % 4));
  w.scale.assign(static_cast<size_t>(batch * sr * sc), 0.0f);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        float& s = w.scale[(b * sr + i / br) * sc + j / bc];
        s = std::max(s, std::fabs(w.original[(b * rows + i) * cols + j]));
      }
  for (float& s : w.scale) {
    s /= 448.0f;
    if (ue8m0) s = std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(s))));
  }
  Shape shape;
  shape.rank = static_cast<int>(dims.size());
  for (int k = 0; k < shape.rank; ++k) shape.dims[k] = dims[k];
  w.q = Tensor::empty(shape, DType::F8_E4M3);
  uint8_t* q = w.q.data<uint8_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t k = (b * rows + i) * cols + j;
        q[k] = f32_to_f8e4m3(w.original[k] / w.scale[(b * sr + i / br) * sc + j / bc]);
      }
  return w;
}

// The dequantisation written out: w[b, i, j] = e4m3(q[b, i, j]) * scale[b, i / br, j / bc].
std::vector<float> reference_dequant(const Fp8Weight& w, int64_t br, int64_t bc) {
  const int64_t rows = w.dims[w.dims.size() - 2], cols = w.dims.back();
  const int64_t sr = w.scale_dims[w.scale_dims.size() - 2], sc = w.scale_dims.back();
  const int64_t n = static_cast<int64_t>(w.original.size()), batch = n / (rows * cols);
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* q = w.q.data<uint8_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t k = (b * rows + i) * cols + j;
        out[k] = e4m3_value(q[k]) * w.scale[(b * sr + i / br) * sc + j / bc];
      }
  return out;
}

Tensor f32_tensor(const std::vector<int64_t>& dims, const std::vector<float>& v) {
  Shape s;
  s.rank = static_cast<int>(dims.size());
  for (int k = 0; k < s.rank; ++k) s.dims[k] = dims[k];
  Tensor t = Tensor::empty(s, DType::F32);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

void add_scale(st::Writer& w, const std::string& name, const Fp8Weight& f) {
  w.add_raw(Folder::scale_name(name), "F32", f.scale_dims, f.scale.data(),
            static_cast<int64_t>(f.scale.size() * 4));
}

void expect_values(const Tensor& t, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(t.dtype(), DType::F32) << what;
  ASSERT_EQ(t.numel(), static_cast<int64_t>(want.size())) << what;
  const float* p = t.data<float>();
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += p[i] != want[i];  // exact: same products
  EXPECT_EQ(bad, 0) << what;
}

// ---------------------------------------------------------------------------------------
// config.json

TEST(HfConfig, TypedReads) {
  const Config c = Config::parse(R"({"architectures": ["GlmMoeDsaForCausalLM"], "n": 78,
      "big": 18446744073709551615, "x": 2.5, "neg": -3, "flag": true, "s": "silu",
      "list": ["full", "shared"], "ints": [128, 128], "nothing": null,
      "rope_scaling": {"factor": 40, "type": "yarn", "deep": {"k": 1}}})", "/m/config.json");
  EXPECT_EQ(c.architecture(), "GlmMoeDsaForCausalLM");
  EXPECT_EQ(c.get_int("n"), 78);
  EXPECT_EQ(c.get_int("neg"), -3);
  EXPECT_EQ(c.get_int_or("absent", 7), 7);
  EXPECT_EQ(c.get_int_or("nothing", 7), 7);
  EXPECT_DOUBLE_EQ(c.get_float("x"), 2.5);
  EXPECT_DOUBLE_EQ(c.get_float("n"), 78.0);
  EXPECT_DOUBLE_EQ(c.get_float_or("absent", 0.5), 0.5);
  EXPECT_TRUE(c.get_bool_or("flag", false));
  EXPECT_TRUE(c.get_bool_or("absent", true));
  EXPECT_EQ(c.get_string("s"), "silu");
  EXPECT_EQ(c.get_string_or("nothing", "relu"), "relu");
  EXPECT_EQ(c.get_strings("list"), (std::vector<std::string>{"full", "shared"}));
  EXPECT_EQ(c.get_ints("ints"), (std::vector<int64_t>{128, 128}));
  EXPECT_TRUE(c.has("n"));
  EXPECT_FALSE(c.has("nothing"));
  const Config r = c.object("rope_scaling");
  EXPECT_EQ(r.get_int("factor"), 40);
  EXPECT_EQ(r.object("deep").get_int("k"), 1);
  EXPECT_IC_ERROR(r.get_int("type"), "/m/config.json: 'rope_scaling.type' is a string, an integer expected");
  EXPECT_IC_ERROR(r.object("deep").get_string("k"), "'rope_scaling.deep.k' is an integer (1), a string expected");
}

TEST(HfConfig, ErrorsNameFileAndKey) {
  const Config c = Config::parse(R"({"num_hidden_layers": "78", "x": 2.5, "big": 18446744073709551615,
      "nothing": null, "architectures": ["A", 3], "empty": [], "flag": 1, "o": [1]})", "/m/config.json");
  EXPECT_IC_ERROR(c.get_int("num_hidden_layers"),
                  "/m/config.json: 'num_hidden_layers' is a string, an integer expected");
  EXPECT_IC_ERROR(c.get_int("x"), "'x' is a float (2.5), an integer expected");
  EXPECT_IC_ERROR(c.get_int("big"), "'big' is an integer (18446744073709551615), which does not fit in int64");
  EXPECT_IC_ERROR(c.get_int("absent"), "'absent' is missing, an integer expected");
  EXPECT_IC_ERROR(c.get_int("nothing"), "'nothing' is null, an integer expected");
  EXPECT_IC_ERROR(c.get_float("num_hidden_layers"), "a number expected");
  EXPECT_IC_ERROR(c.get_bool_or("flag", false), "'flag' is an integer (1), a boolean expected");
  EXPECT_IC_ERROR(c.get_strings("architectures"), "'architectures'[1] is an integer (3), a string expected");
  EXPECT_IC_ERROR(c.get_ints("architectures"), "'architectures'[0] is a string, an integer expected");
  EXPECT_IC_ERROR(c.architecture(), "'architectures'[1]");
  EXPECT_IC_ERROR(c.get_strings("x"), "'x' is a float (2.5), an array of strings expected");
  EXPECT_IC_ERROR(c.object("o"), "'o' is an array, an object expected");
  EXPECT_IC_ERROR(Config::parse(R"({"architectures": []})", "/m/config.json").architecture(),
                  "'architectures' is an empty array");
  EXPECT_IC_ERROR(Config::parse("{\"a\": 1,", "/m/config.json"), "/m/config.json is not valid JSON");
  EXPECT_IC_ERROR(Config::parse("[1, 2]", "/m/config.json"), "/m/config.json is an array, a JSON object expected");
  EXPECT_IC_ERROR(Config::parse(std::string(100, '[') + std::string(100, ']'), "/m/config.json"),
                  "nests deeper than 64 levels");
  EXPECT_IC_ERROR(Config::load("/nonexistent/config.json"), "/nonexistent/config.json does not exist");
  // One byte over the limit, as text and as a file: refused before parsing or reading.
  const std::string huge = "{\"a\": \"" + std::string(kMaxConfigBytes, 'x') + "\"}";
  EXPECT_IC_ERROR(Config::parse(huge, "/m/config.json"),
                  fmt::format("/m/config.json is {} bytes, more than the {}-byte limit for a config file",
                              huge.size(), kMaxConfigBytes));
  TempDir d;
  write_text(d / "config.json", std::string(kMaxConfigBytes + 1, ' '));
  EXPECT_IC_ERROR(Config::load(d / "config.json"),
                  fmt::format("is {} bytes, more than the {}-byte limit for a config file",
                              kMaxConfigBytes + 1, kMaxConfigBytes));
}

TEST(HfConfig, Quantization) {
  auto quant = [](const json& q) {
    return Quantization::from_config(Config::parse(json{{"quantization_config", q}}.dump(), "/m/config.json"));
  };
  EXPECT_FALSE(Quantization::from_config(Config::parse("{}")).fp8);
  EXPECT_FALSE(Quantization::from_config(Config::parse(R"({"quantization_config": null})")).fp8);
  const Quantization q = quant(kFp8Quant);
  EXPECT_TRUE(q.fp8);
  EXPECT_EQ(q.block_rows, 128);
  EXPECT_EQ(q.block_cols, 128);
  EXPECT_FALSE(q.ue8m0_scales);
  json u = kFp8Quant;
  u["scale_fmt"] = "ue8m0";
  u["weight_block_size"] = {64, 32};
  EXPECT_TRUE(quant(u).ue8m0_scales);
  EXPECT_EQ(quant(u).block_rows, 64);
  EXPECT_EQ(quant(u).block_cols, 32);

  auto with = [](const char* key, json v) {
    json q = kFp8Quant;
    if (v.is_null()) q.erase(key);
    else q[key] = std::move(v);
    return q;
  };
  EXPECT_IC_ERROR(quant(with("quant_method", "awq")),
                  "/m/config.json: 'quantization_config.quant_method' is \"awq\", which indexcache does not support");
  EXPECT_IC_ERROR(quant(with("quant_method", nullptr)), "'quantization_config.quant_method' is missing");
  EXPECT_IC_ERROR(quant(with("fmt", "e5m2")), "'quantization_config.fmt' is \"e5m2\"");
  EXPECT_IC_ERROR(quant(with("activation_scheme", "static")), "'quantization_config.activation_scheme' is \"static\"");
  EXPECT_IC_ERROR(quant(with("weight_block_size", nullptr)), "per-tensor fp8 is not supported");
  EXPECT_IC_ERROR(quant(with("weight_block_size", json::array({128}))), "is [128], two positive integers");
  EXPECT_IC_ERROR(quant(with("weight_block_size", {128, 0})), "is [128, 0], two positive integers");
  EXPECT_IC_ERROR(quant(with("weight_block_size", {128, "a"})), "'quantization_config.weight_block_size'[1]");
  EXPECT_IC_ERROR(quant(with("scale_fmt", "e8m0fnu")), "'quantization_config.scale_fmt' is \"e8m0fnu\"");
  EXPECT_IC_ERROR(quant("fp8"), "'quantization_config' is a string, an object expected");
}

// ---------------------------------------------------------------------------------------
// Weights

TEST(HfFolder, SingleFileEveryFloatDType) {
  TempDir d;
  write_config(d);
  std::mt19937 rng(11);
  const std::vector<float> a = random_values(6 * 5, rng), b = random_values(7, rng), c = random_values(3 * 4, rng);
  Tensor ta = Tensor::empty({6, 5}, DType::BF16), tb = Tensor::empty({7}, DType::F16);
  std::vector<float> wa(a.size()), wb(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ta.data<uint16_t>()[i] = f32_to_bf16(a[i]);
    wa[i] = bf16_to_f32(ta.data<uint16_t>()[i]);
  }
  for (size_t i = 0; i < b.size(); ++i) {
    tb.data<uint16_t>()[i] = f32_to_f16(b[i]);
    wb[i] = f16_to_f32(tb.data<uint16_t>()[i]);
  }
  st::Writer w;
  w.add("a.weight", ta);
  w.add("b.bias", tb);
  w.add("c.weight", f32_tensor({3, 4}, c));
  w.write(d / "model.safetensors");

  const Folder f = Folder::open(d.str());
  EXPECT_FALSE(f.quantization().fp8);
  EXPECT_EQ(f.config().get_int("num_hidden_layers"), 2);
  EXPECT_TRUE(f.has("a.weight"));
  EXPECT_FALSE(f.has("a.weight_scale_inv"));
  EXPECT_EQ(f.shape("a.weight"), (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(f.dtype_name("b.bias"), "F16");
  expect_values(f.read_f32("a.weight", {6, 5}), wa, "bf16");
  expect_values(f.read_f32("b.bias", {7}), wb, "f16");
  expect_values(f.read_f32("c.weight", {3, 4}), c, "f32");
  EXPECT_EQ(f.tokenizer_json(), "");
  write_text(d / "tokenizer.json", "{}");
  EXPECT_EQ(f.tokenizer_json(), d / "tokenizer.json");
  EXPECT_EQ(f.tokenizer_config_json(), "");
  f.check_all();
}

// fp8 weights whose rows and cols are not multiples of the block (partial edge blocks), a
// stacked 3-D one, ue8m0 scales and BF16 / F8_E8M0 scale storage.
TEST(HfFolder, Fp8BlockScalesDequantise) {
  for (const bool ue8m0 : {false, true}) {
    SCOPED_TRACE(ue8m0 ? "ue8m0" : "f32 scales");
    TempDir d;
    json q = kFp8Quant;
    if (ue8m0) q["scale_fmt"] = "ue8m0";
    write_config(d, {{"quantization_config", q}});
    std::mt19937 rng(ue8m0 ? 5 : 6);
    const Fp8Weight w2 = make_fp8({300, 200}, 128, 128, ue8m0, rng);
    const Fp8Weight w3 = make_fp8({2, 130, 129}, 128, 128, ue8m0, rng);
    const Fp8Weight ws = make_fp8({128, 256}, 128, 128, true, rng);  // powers of two for E8M0
    st::Writer w;
    w.add("q.weight", w2.q);
    add_scale(w, "q.weight", w2);
    w.add("experts.weight", w3.q);
    // BF16 scales: exact when the scale is a power of two, so use w3's only under ue8m0.
    std::vector<uint16_t> bf(w3.scale.size());
    for (size_t i = 0; i < bf.size(); ++i) bf[i] = f32_to_bf16(w3.scale[i]);
    Fp8Weight w3b = w3;
    for (size_t i = 0; i < bf.size(); ++i) w3b.scale[i] = bf16_to_f32(bf[i]);
    w.add_raw("experts.weight_scale_inv", "BF16", w3.scale_dims, bf.data(), static_cast<int64_t>(bf.size() * 2));
    w.add("e8.weight", ws.q);
    std::vector<uint8_t> e8(ws.scale.size());
    for (size_t i = 0; i < e8.size(); ++i) {
      int e = 0;
      std::frexp(ws.scale[i], &e);  // scale = 0.5 * 2^e
      e8[i] = static_cast<uint8_t>(e - 1 + 127);
    }
    w.add_raw("e8.weight_scale_inv", "F8_E8M0", ws.scale_dims, e8.data(), static_cast<int64_t>(e8.size()));
    w.write(d / "model.safetensors");

    const Folder f = Folder::open(d.str());
    ASSERT_TRUE(f.quantization().fp8);
    expect_values(f.read_f32("e8.weight_scale_inv", ws.scale_dims), ws.scale, "E8M0 scales");
    EXPECT_EQ(f.quantization().ue8m0_scales, ue8m0);
    f.check_all();
    for (const auto& [name, fw] : std::vector<std::pair<std::string, const Fp8Weight*>>{
             {"q.weight", &w2}, {"experts.weight", &w3b}, {"e8.weight", &ws}}) {
      const Tensor t = f.read_f32(name, fw->dims);
      expect_values(t, reference_dequant(*fw, 128, 128), name);
      // And close to what was quantised: e4m3 keeps 3 mantissa bits (relative 2^-4 after
      // rounding), subnormals a step of 2^-9 of the block scale; BF16 scales add 2^-8.
      const int64_t rows = fw->dims[fw->dims.size() - 2], cols = fw->dims.back();
      const int64_t sc = fw->scale_dims.back(), sr = fw->scale_dims[fw->scale_dims.size() - 2];
      int64_t bad = 0;
      for (int64_t k = 0; k < t.numel(); ++k) {
        const int64_t b = k / (rows * cols), i = k / cols % rows, j = k % cols;
        const float s = fw->scale[(b * sr + i / 128) * sc + j / 128];
        const float x = fw->original[k];
        bad += std::fabs(t.data<float>()[k] - x) > std::fabs(x) * (0.0625f + 0.004f) + s * 0.002f;
      }
      EXPECT_EQ(bad, 0) << name;
    }
  }
}

TEST(HfFolder, ShardedIndexAcrossTwoShards) {
  TempDir d;
  write_config(d, {{"quantization_config", kFp8Quant}});
  std::mt19937 rng(7);
  const Fp8Weight fw = make_fp8({256, 130}, 128, 128, false, rng);
  const std::vector<float> norm = random_values(130, rng);
  st::Writer s1, s2;
  s1.add("layers.0.w.weight", fw.q);
  add_scale(s2, "layers.0.w.weight", fw);  // the scale in the other shard
  s2.add("layers.0.norm.weight", f32_tensor({130}, norm));
  s1.write(d / "model-00001-of-00002.safetensors");
  s2.write(d / "model-00002-of-00002.safetensors");
  const json index = {{"metadata", {{"total_size", 1}}},
                      {"weight_map",
                       {{"layers.0.w.weight", "model-00001-of-00002.safetensors"},
                        {"layers.0.w.weight_scale_inv", "model-00002-of-00002.safetensors"},
                        {"layers.0.norm.weight", "model-00002-of-00002.safetensors"}}}};
  write_text(d / "model.safetensors.index.json", index.dump());

  const Folder f = Folder::open(d.str());
  EXPECT_EQ(f.weights().shard_names().size(), 2u);
  expect_values(f.read_f32("layers.0.w.weight", {256, 130}), reference_dequant(fw, 128, 128), "fp8");
  expect_values(f.read_f32("layers.0.norm.weight", {130}), norm, "norm");
  f.check_all();
}

// ---------------------------------------------------------------------------------------
// Bad folders

TEST(HfFolder, MissingFilesAndShards) {
  TempDir d;
  EXPECT_IC_ERROR(Folder::open(d / "nope"), "does not exist or is not a directory");
  EXPECT_IC_ERROR(Folder::open(d.str()), "has no config.json");
  write_text(d / "config.json", "{\"num_hidden_layers\": 2,");
  EXPECT_IC_ERROR(Folder::open(d.str()), "config.json is not valid JSON");
  write_config(d, {{"quantization_config", {{"quant_method", "gptq"}}}});
  EXPECT_IC_ERROR(Folder::open(d.str()), "'quantization_config.quant_method' is \"gptq\"");
  write_config(d);
  EXPECT_IC_ERROR(Folder::open(d.str()), "has neither model.safetensors.index.json nor model.safetensors");
  st::Writer w;
  w.add("a", f32_tensor({2}, {1, 2}));
  w.write(d / "model-00001-of-00002.safetensors");
  const json index = {{"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                      {"b", "model-00002-of-00002.safetensors"}}}};
  write_text(d / "model.safetensors.index.json", index.dump());
  EXPECT_IC_ERROR(Folder::open(d.str()), "model-00002-of-00002.safetensors is missing");
  // The index names a tensor its shard does not hold.
  write_text(d / "model.safetensors.index.json",
             json{{"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                  {"b", "model-00001-of-00002.safetensors"}}}}.dump());
  const Folder f = Folder::open(d.str());
  EXPECT_IC_ERROR(f.read_f32("b", {2}), "maps tensor 'b' to shard");
  EXPECT_IC_ERROR(f.check_all(), "maps tensor 'b' to shard");
  EXPECT_IC_ERROR(f.read_f32("zzz", {2}), "tensor 'zzz' not found");
  EXPECT_IC_ERROR(f.shape("zzz"), "tensor 'zzz' not found");
}

TEST(HfFolder, TruncatedShard) {
  TempDir d;
  write_config(d);
  st::Writer w;
  w.add("a", f32_tensor({64}, std::vector<float>(64, 1.0f)));
  w.write(d / "model.safetensors");
  fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 10);
  EXPECT_IC_ERROR(Folder::open(d.str()), d / "model.safetensors");
  // In a sharded folder the shard is opened on first use; the error names it then.
  fs::rename(d / "model.safetensors", d / "model-00001-of-00001.safetensors");
  write_text(d / "model.safetensors.index.json",
             json{{"weight_map", {{"a", "model-00001-of-00001.safetensors"}}}}.dump());
  const Folder f = Folder::open(d.str());
  const std::string msg = error_of([&] { f.read_f32("a", {64}); });
  EXPECT_NE(msg.find("model-00001-of-00001.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;
}

TEST(HfFolder, ShapeDisagreesWithCaller) {
  TempDir d;
  write_config(d);
  st::Writer w;
  w.add("model.layers.0.mlp.down_proj.weight", f32_tensor({4, 8}, std::vector<float>(32, 0.5f)));
  w.write(d / "model.safetensors");
  const Folder f = Folder::open(d.str());
  EXPECT_IC_ERROR(f.read_f32("model.layers.0.mlp.down_proj.weight", {8, 4}),
                  "tensor 'model.layers.0.mlp.down_proj.weight' in " + (d / "model.safetensors") +
                      " has shape [4, 8] in the checkpoint, [8, 4] expected");
  EXPECT_IC_ERROR(f.read_f32("model.layers.0.mlp.down_proj.weight", {32}), "[4, 8] in the checkpoint, [32] expected");
}

TEST(HfFolder, BadScalesAndDTypes) {
  std::mt19937 rng(9);
  const Fp8Weight fw = make_fp8({300, 200}, 128, 128, false, rng);  // scales [3, 2]
  // A folder with config `quant` and the tensors `add` writes; returns the read's error.
  auto folder_error = [&](json quant, const std::function<void(st::Writer&)>& add, bool check_all = false) {
    TempDir d;
    write_config(d, quant.is_null() ? json::object() : json{{"quantization_config", quant}});
    st::Writer w;
    add(w);
    w.write(d / "model.safetensors");
    return error_of([&] {
      const Folder f = Folder::open(d.str());
      if (check_all) f.check_all();
      else f.read_f32("w", f.shape("w"));
    });
  };
  auto has = [](const std::string& msg, const std::string& sub) {
    EXPECT_NE(msg.find(sub), std::string::npos) << "expected \"" << sub << "\" in: " << msg;
  };
  for (const bool all : {false, true}) {
    SCOPED_TRACE(all ? "check_all" : "read_f32");
    has(folder_error(kFp8Quant, [&](st::Writer& w) { w.add("w", fw.q); }, all),
        "fp8 tensor 'w' in ");
    has(folder_error(kFp8Quant, [&](st::Writer& w) { w.add("w", fw.q); }, all),
        "has no block scales: 'w_scale_inv' is not in");
    has(folder_error(kFp8Quant, [&](st::Writer& w) {
          w.add("w", fw.q);
          w.add_raw("w_scale_inv", "F32", {2, 2}, fw.scale.data(), 16);
        }, all),
        "scale tensor 'w_scale_inv' in ");
    has(folder_error(kFp8Quant, [&](st::Writer& w) {
          w.add("w", fw.q);
          w.add_raw("w_scale_inv", "F32", {2, 2}, fw.scale.data(), 16);
        }, all),
        "has shape [2, 2], but fp8 weight 'w' of shape [300, 200] in 128 x 128 blocks needs [3, 2]");
    has(folder_error(kFp8Quant, [&](st::Writer& w) {
          w.add("w", fw.q);
          w.add_raw("w_scale_inv", "F16", {3, 2}, fw.scale.data(), 12);
        }, all),
        "scale tensor 'w_scale_inv' in ");
    has(folder_error(kFp8Quant, [&](st::Writer& w) {
          w.add("w", fw.q);
          w.add_raw("w_scale_inv", "I32", {3, 2}, fw.scale.data(), 24);
        }, all),
        "is I32, F32 expected (or BF16, F8_E8M0)");
    has(folder_error(nullptr, [&](st::Writer& w) {
          w.add("w", fw.q);
          add_scale(w, "w", fw);
        }, all),
        "is F8_E4M3, but ");
    has(folder_error(nullptr, [&](st::Writer& w) {
          w.add("w", fw.q);
          add_scale(w, "w", fw);
        }, all),
        "config.json declares no fp8 quantization_config");
    has(folder_error(kFp8Quant, [&](st::Writer& w) {
          const uint8_t b[4] = {1, 2, 3, 4};
          w.add_raw("w", "F8_E4M3", {4}, b, 4);
          const float s = 1;
          w.add_raw("w_scale_inv", "F32", {1}, &s, 4);
        }, all),
        "has shape [4]; block scales need a weight of rank 2 or more");
  }
  // A different block size changes the count the scales must have.
  json q64 = kFp8Quant;
  q64["weight_block_size"] = {64, 128};
  has(folder_error(q64, [&](st::Writer& w) {
        w.add("w", fw.q);
        add_scale(w, "w", fw);
      }),
      "in 64 x 128 blocks needs [5, 2]");
  // Scale values are read only by read_f32.
  std::vector<float> bad = fw.scale;
  bad[3] = NAN;
  has(folder_error(kFp8Quant, [&](st::Writer& w) {
        w.add("w", fw.q);
        w.add_raw("w_scale_inv", "F32", {3, 2}, bad.data(), 24);
      }),
      "entry 3 is nan, a finite non-negative scale expected");
  bad[3] = -1.0f;
  has(folder_error(kFp8Quant, [&](st::Writer& w) {
        w.add("w", fw.q);
        w.add_raw("w_scale_inv", "F32", {3, 2}, bad.data(), 24);
      }),
      "entry 3 is -1");
  json ue = kFp8Quant;
  ue["scale_fmt"] = "ue8m0";
  has(folder_error(ue, [&](st::Writer& w) {
        w.add("w", fw.q);
        add_scale(w, "w", fw);  // amax / 448: not powers of two
      }),
      "scale_fmt \"ue8m0\" needs a power of two");
  has(folder_error(kFp8Quant, [&](st::Writer& w) {
        w.add("w", fw.q);
        const std::vector<uint8_t> e8 = {127, 127, 0xFF, 127, 127, 127};
        w.add_raw("w_scale_inv", "F8_E8M0", {3, 2}, e8.data(), 6);
      }),
      "entry 2 is the E8M0 NaN (0xFF)");
  // Weights of types the reader does not convert.
  has(folder_error(kFp8Quant, [&](st::Writer& w) {
        const uint8_t b[4] = {1, 2, 3, 4};
        w.add_raw("w", "F8_E5M2", {2, 2}, b, 4);
      }),
      "tensor 'w' in ");
  has(folder_error(kFp8Quant, [&](st::Writer& w) {
        const uint8_t b[4] = {1, 2, 3, 4};
        w.add_raw("w", "F8_E5M2", {2, 2}, b, 4);
      }),
      "is F8_E5M2; the only fp8 tensors indexcache reads are F8_E4M3 weights");
  has(folder_error(nullptr, [&](st::Writer& w) {
        const int64_t b[2] = {1, 2};
        w.add_raw("w", "I64", {2}, b, 16);
      }),
      "has dtype I64");
}

TEST(HfFolder, EmptyFp8Weight) {
  // Zero rows: no blocks, no values, no division by zero.
  TempDir d;
  write_config(d, {{"quantization_config", kFp8Quant}});
  st::Writer w;
  w.add_raw("w", "F8_E4M3", {0, 300}, nullptr, 0);
  w.add_raw("w_scale_inv", "F32", {0, 3}, nullptr, 0);
  w.write(d / "model.safetensors");
  const Folder f = Folder::open(d.str());
  EXPECT_EQ(f.read_f32("w", {0, 300}).numel(), 0);
}

// The fuzz target's seeds (scripts/make-hf-fuzz-seeds.py, a writer independent of ours) are
// valid folders: everything in them reads, and GLM-5.2's knobs give its 21 F layers.
TEST(HfFolder, FuzzSeedsAreValidFolders) {
  std::string src = ".";
  if (const char* e = std::getenv("IC_SOURCE_DIR"); e && *e) src = e;
#ifdef IC_SOURCE_DIR
  else src = IC_SOURCE_DIR;
#endif
  const fs::path seeds = fs::path(src) / "fuzz/corpus/hf_folder";
  ASSERT_TRUE(fs::is_directory(seeds)) << seeds;
  int n_seeds = 0;
  for (const auto& entry : fs::directory_iterator(seeds)) {
    SCOPED_TRACE(entry.path().string());
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<uint8_t> b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    TempDir d;
    size_t at = 0;
    while (at < b.size()) {  // u16 name length, name, u32 size, bytes
      ASSERT_LE(at + 2, b.size());
      const size_t nl = b[at] | (size_t{b[at + 1]} << 8);
      ASSERT_LE(at + 2 + nl + 4, b.size());
      const std::string name(reinterpret_cast<const char*>(&b[at + 2]), nl);
      uint32_t size = 0;
      std::memcpy(&size, &b[at + 2 + nl], 4);
      at += 2 + nl + 4;
      ASSERT_LE(at + size, b.size());
      write_text(d / name, std::string(reinterpret_cast<const char*>(&b[at]), size));
      at += size;
    }
    const Folder f = Folder::open(d.str());
    f.check_all();
    for (const auto& [name, shard] : f.weights().weight_map()) {
      const Tensor t = f.read_f32(name, f.shape(name));
      for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.data<float>()[i])) << name;
    }
    const int64_t n = f.config().get_int("num_hidden_layers");
    for (PatternRule r : {PatternRule::THUDM, PatternRule::SGLang, PatternRule::HF})
      (void)pattern_from_config(f.config(), n, r);
    if (n == 78) {
      const LayerPattern p = *pattern_from_config(f.config(), n, PatternRule::HF);
      EXPECT_EQ(p.n_full(), 21);
      EXPECT_TRUE(ignored_knobs(f.config(), PatternRule::HF).size() == 2u);  // freq, offset
      EXPECT_EQ(pattern_from_freq(78, 4, 3, PatternRule::SGLang), p);
    }
    ++n_seeds;
  }
  EXPECT_GE(n_seeds, 5);
}

}  // namespace
}  // namespace ic::hf
