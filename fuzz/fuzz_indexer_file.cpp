// libFuzzer target for the indexer file (safetensors with indexcache.* metadata, src/model/dsa.h):
// any byte string must load through load_indexers for a fixed small model shape or throw
// ic::Error, never crash, hang or allocate without bound. What loads is saved again with
// save_indexers (F32 and BF16 storage) and loaded back: the config, pattern, metadata and F32
// weights must come back the same (BF16: the same shapes).
//
// Seeds: fuzz/corpus/indexer_file/ holds the files LLVMFuzzerInitialize writes with the library's
// own save_indexers when IC_FUZZ_SEED_DIR is set (docs/FUZZ.md says how), plus broken variants.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "core/error.h"
#include "model/dsa.h"

namespace {

// The model the fuzzed file is loaded for: 4 layers of width 16.
constexpr int64_t kLayers = 4, kDim = 16;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// A per-process file in RAM: load_indexers reads a path.
std::string scratch(const char* what) {
  const std::string dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  return dir + "/ic_fuzz_indexer_" + std::to_string(::getpid()) + "_" + what + ".safetensors";
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void round_trip(const ic::DsaSpec& spec, ic::DType storage) {
  const std::string path = scratch("again");
  ic::save_indexers(path, spec, kDim, storage);
  const ic::DsaSpec back = ic::load_indexers(path, kLayers, kDim);
  std::filesystem::remove(path);
  check(back.pattern == spec.pattern);
  const ic::IndexerConfig &a = spec.config, &b = back.config;
  check(a.n_heads == b.n_heads && a.head_dim == b.head_dim && a.rope_dim == b.rope_dim &&
        a.rope_style == b.rope_style && a.topk == b.topk);
  check(same_bits(a.rope_base, b.rope_base) && same_bits(a.norm_eps, b.norm_eps));
  // Free-text metadata comes back as it was; the keys save_indexers writes from the config are
  // written in its own form ("09999" is read as 9999 and written "9999"), compared above.
  static const std::set<std::string> kWritten = {
      "indexcache.format",   "indexcache.n_layers",   "indexcache.dim",       "indexcache.n_heads",
      "indexcache.head_dim", "indexcache.rope_dim",   "indexcache.rope_style", "indexcache.rope_base",
      "indexcache.norm_eps", "indexcache.topk",       "indexcache.pattern"};
  for (const auto& [k, v] : spec.metadata)
    if (!kWritten.count(k)) check(back.metadata.at(k) == v);
  for (int64_t l = 0; l < kLayers; ++l) {
    const ic::IndexerWeights &w = spec.indexers[l], &u = back.indexers[l];
    check(w.wq.defined() == u.wq.defined());
    if (!w.wq.defined()) continue;
    for (auto [x, y] : {std::pair{&w.wq, &u.wq}, {&w.wk, &u.wk}, {&w.k_norm, &u.k_norm},
                        {&w.k_bias, &u.k_bias}, {&w.wproj, &u.wproj}}) {
      check(x->shape() == y->shape());
      if (storage == ic::DType::F32)
        check(std::memcmp(x->data<float>(), y->data<float>(), static_cast<size_t>(x->nbytes())) == 0);
    }
  }
}

// Valid files as the library writes them: patterns with one to all F layers, both RoPE styles,
// F32 and half storage, free-text metadata.
void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  ic::IndexerConfig c;
  c.n_heads = 2;
  c.head_dim = 8;
  c.rope_dim = 4;
  c.topk = 4;
  int i = 0;
  for (const char* letters : {"FSSS", "FSFS", "FFFF"}) {
    ic::DsaSpec spec;
    spec.config = c;
    spec.pattern = ic::LayerPattern::parse(letters, kLayers);
    spec.indexers.resize(kLayers);
    for (int64_t l = 0; l < kLayers; ++l)
      if (spec.pattern.is_full(l)) spec.indexers[l] = ic::IndexerWeights::random(c, kDim, 7 + l);
    spec.metadata["indexcache.recipe"] = "fuzz seed";
    const ic::DType storage = i == 1 ? ic::DType::BF16 : i == 2 ? ic::DType::F16 : ic::DType::F32;
    ic::save_indexers(dir + "/" + letters + ".safetensors", spec, kDim, storage);
    c.rope_style = ic::ops::RopeStyle::kAdjacent;
    ++i;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("IC_FUZZ_SEED_DIR"); dir && *dir) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch("input");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const ic::DsaSpec spec = ic::load_indexers(path, kLayers, kDim);
    check(spec.n_layers() == kLayers && static_cast<int64_t>(spec.indexers.size()) == kLayers);
    round_trip(spec, ic::DType::F32);
    round_trip(spec, ic::DType::BF16);
  } catch (const ic::Error&) {
  }
  try {  // the CLI's --pattern and --topk overrides
    (void)ic::load_indexers(path, kLayers, kDim, ic::LayerPattern::parse("FSFS", kLayers), 2);
  } catch (const ic::Error&) {
  }
  std::filesystem::remove(path);
  return 0;
}
