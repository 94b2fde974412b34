// libFuzzer target for the safetensors reader. Any input must either parse or throw ic::Error;
// anything else (a crash, a sanitizer report, another exception type) is a finding. Inputs
// that parse are also pushed through every accessor and through a writer round trip, which
// must reproduce the same tensors and metadata.
#include <cstdint>
#include <cstring>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    const st::File f = st::File::from_buffer(std::move(bytes), "fuzz");
    exercise(f);
  } catch (const ic::Error&) {
  }
  return 0;
}
