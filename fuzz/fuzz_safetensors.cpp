// libFuzzer target for the safetensors reader. Any input must either parse or throw ic::Error;
// anything else (a crash, a sanitizer report, another exception type) is a finding. Inputs
// that parse are also pushed through every accessor and through a writer round trip, which
// must reproduce the same tensors and metadata.
//
// Seeds: fuzz/corpus/safetensors/ holds the files LLVMFuzzerInitialize writes with st::Writer
// when IC_FUZZ_SEED_DIR is set, plus one written by the Python safetensors package
// (tests/data/safetensors_python.safetensors); docs/FUZZ.md says how to remake them.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace st = ic::safetensors;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void exercise(const st::File& f) {
  for (const st::TensorInfo& t : f.tensors()) {
    check(f.find(t.name) == &t);
    check(t.nbytes == t.numel() * st::dtype_size(t.dtype_name));
    check(t.end - t.begin == static_cast<uint64_t>(t.nbytes));
    volatile uint8_t sink = 0;
    for (int64_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];  // ASan: bytes in bounds
    try {
      const ic::Tensor v = f.tensor_view(t);
      check(v.nbytes() == t.nbytes);
    } catch (const ic::Error&) {
    }
    try {
      const ic::Tensor r = f.read_f32(t);
      check(r.numel() == t.numel());
    } catch (const ic::Error&) {
    }
  }

  // Round trip: the writer's file of the same tensors parses to the same content.
  st::Writer w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const st::TensorInfo& t : f.tensors()) {
    if (t.name.empty() || t.name == "__metadata__") return;  // the writer refuses these
    w.add_raw(t.name, t.dtype_name, t.dims, t.data, t.nbytes);
  }
  std::vector<uint8_t> bytes;
  try {
    bytes = w.bytes();
  } catch (const ic::Error&) {
    return;  // JSON strings nlohmann will not serialise (checked by the writer)
  }
  const st::File g = st::File::from_buffer(std::move(bytes), "roundtrip");
  check(g.tensors().size() == f.tensors().size());
  check(g.metadata() == f.metadata());
  for (const st::TensorInfo& t : f.tensors()) {
    const st::TensorInfo* u = g.find(t.name);
    check(u != nullptr);
    check(u->dtype_name == t.dtype_name && u->dims == t.dims && u->nbytes == t.nbytes);
    check(t.nbytes == 0 || std::memcmp(u->data, t.data, static_cast<size_t>(t.nbytes)) == 0);
  }
}

// Deterministic filler; content does not matter, only that it is not all zero.
std::vector<uint8_t> filler(int64_t n, uint8_t seed) {
  std::vector<uint8_t> b(static_cast<size_t>(n));
  uint8_t x = seed;
  for (auto& v : b) v = x = static_cast<uint8_t>(x * 37 + 11);
  return b;
}

void add_filled(st::Writer& w, const std::string& name, std::string_view dtype,
                std::vector<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const std::vector<uint8_t> b =
      filler(numel * st::dtype_size(dtype), static_cast<uint8_t>(name.size()));
  w.add_raw(name, dtype, std::move(shape), b.data(), static_cast<int64_t>(b.size()));
}

// Small valid files covering every dtype the reader knows, metadata, scalars, zero-sized
// tensors and an fp8 weight beside its scale tensor, named as a DeepSeek checkpoint names them.
void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  {
    st::Writer w;
    w.set_metadata("format", "pt");
    int i = 0;
    for (const char* dt : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
                           "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"})
      add_filled(w, std::string("t.") + dt, dt, {2, 1 + i++ % 3});
    w.write(dir + "/all_dtypes.safetensors");
  }
  {
    st::Writer w;
    add_filled(w, "model.layers.0.self_attn.q_proj.weight", "F8_E4M3", {16, 64});
    add_filled(w, "model.layers.0.self_attn.q_proj.weight_scale_inv", "F32", {1, 1});
    add_filled(w, "scalar", "F32", {});
    add_filled(w, "empty", "BF16", {0, 4});
    w.write(dir + "/fp8_scales.safetensors");
  }
  st::Writer().write(dir + "/empty.safetensors");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("IC_FUZZ_SEED_DIR"); dir && *dir) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    const st::File f = st::File::from_buffer(std::move(bytes), "fuzz");
    exercise(f);
  } catch (const ic::Error&) {
  }
  return 0;
}
