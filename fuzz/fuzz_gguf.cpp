// libFuzzer target for the GGUF reader: any byte string must parse or throw ic::Error, never
// crash, hang, leak or allocate without bound. Accepted files are also walked (metadata
// printing, tensor views, dequantisation of small tensors) to reach the code behind parse.
//
// Seeds: fuzz/corpus/gguf/ holds the small valid files LLVMFuzzerInitialize writes with
// gguf::Writer when IC_FUZZ_SEED_DIR is set (docs/FUZZ.md says how to remake them).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"

namespace {

using ic::DType;
using ic::gguf::Value;
using ic::gguf::ValueType;
using ic::gguf::Writer;

// Deterministic filler; content does not matter, only that it is not all zero.
std::vector<uint8_t> filler(int64_t n, uint8_t seed) {
  std::vector<uint8_t> b(static_cast<size_t>(n));
  uint8_t x = seed;
  for (auto& v : b) v = x = static_cast<uint8_t>(x * 37 + 11);
  return b;
}

void add_filled(Writer& w, const std::string& name, std::vector<int64_t> ne, DType t) {
  int64_t numel = 1;
  for (int64_t d : ne) numel *= d;
  const std::vector<uint8_t> b = filler(ic::dtype_row_bytes(t, numel), static_cast<uint8_t>(name.size()));
  w.add_tensor(name, std::move(ne), t, b.data(), static_cast<int64_t>(b.size()));
}

void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  {
    Writer w;
    w.add_string("general.architecture", "llama");
    w.add_uint32("llama.block_count", 2);
    w.add_float32("llama.rope.freq_base", 100000.0f);
    w.add_bool("b", true);
    w.add("i8", Value::make_int(ValueType::INT8, -3));
    w.add_uint64("u64", 1ull << 40);
    w.add_float64("f64", 0.25);
    w.add_string_array("tokenizer.ggml.tokens", {"a", "b", "<s>"});
    w.add("ints", Value::make_int_array(ValueType::INT32, {1, 2, 3}));
    w.add("floats", Value::make_float_array(ValueType::FLOAT32, {0.5}));
    w.add("nested", Value::make_array_array({Value::make_int_array(ValueType::UINT16, {7})}));
    add_filled(w, "f32", {4, 2}, DType::F32);
    add_filled(w, "f16", {8}, DType::F16);
    add_filled(w, "bf16", {2, 2}, DType::BF16);
    add_filled(w, "q4_0", {32}, DType::Q4_0);
    add_filled(w, "q4_1", {32, 2}, DType::Q4_1);
    add_filled(w, "q8_0", {32}, DType::Q8_0);
    add_filled(w, "q4_k", {256}, DType::Q4_K);
    add_filled(w, "q6_k", {256}, DType::Q6_K);
    w.write(dir + "/all_types.gguf");
  }
  {
    Writer w(2);
    w.set_alignment(64);
    w.add_string("general.name", "v2");
    add_filled(w, "t", {32, 1, 1, 2}, DType::Q8_0);
    w.write(dir + "/v2_align64.gguf");
  }
  Writer().write(dir + "/empty.gguf");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("IC_FUZZ_SEED_DIR"); dir && *dir) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const ic::gguf::File f =
        ic::gguf::File::from_buffer(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
    for (const auto& kv : f.metadata()) (void)kv.value.str(4);
    (void)f.get_int_or("general.alignment", 32);
    for (const auto& ti : f.tensors()) {
      const ic::Tensor view = f.tensor_view(ti);
      if (ti.numel() <= (1 << 16)) (void)ic::dequantize(view);
    }
  } catch (const ic::Error&) {
  }
  return 0;
}
