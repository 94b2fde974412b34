// libFuzzer target for the HF model folder as a whole: config.json, the index, its shards,
// fp8 scale tensors, and the IndexCache pattern knobs. An input is a tiny archive of files,
// unpacked into a fresh directory; then the folder is opened, every tensor the index names is
// read with its stored shape, check_all runs, and the pattern is read under every rule. Any
// input must load or throw ic::Error; anything else (a crash, a sanitizer report, another
// exception type, a broken invariant below) is a finding.
//
// Archive format, repeated to the end of the input (a truncated last record is dropped):
//   u16 little-endian name length, the name, u32 little-endian size, that many bytes.
// Names are 1 to 64 characters of [A-Za-z0-9._-] and not "." or ".."; other records are
// skipped, so the fuzzer cannot write outside the directory.
//
// Seeds: fuzz/corpus/hf_folder/, packed valid folders (bf16, fp8 with block scales, ue8m0 and
// E8M0 scales, two shards, stacked experts, GLM-5.2's knobs) written by
// scripts/make-hf-fuzz-seeds.py.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"

namespace fs = std::filesystem;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// More files than a folder needs; bounds the syscalls one input can cost.
constexpr int kMaxFiles = 16;

bool safe_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n == "." || n == "..") return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void unpack(const uint8_t* data, size_t size, const fs::path& dir) {
  size_t at = 0;
  int files = 0;
  while (files < kMaxFiles && size - at >= 2) {
    const size_t name_len = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    if (size - at < name_len + 4) return;
    const std::string name(reinterpret_cast<const char*>(data + at), name_len);
    at += name_len;
    uint32_t n = 0;
    std::memcpy(&n, data + at, 4);
    at += 4;
    if (size - at < n) return;
    if (safe_name(name)) {
      std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data + at), n);
      ++files;
    }
    at += n;
  }
}

// A per-process base directory, removed at exit; each input gets a fresh "m" inside it. In
// memory (/dev/shm) unless TMPDIR says otherwise: on a disk-backed /tmp the file churn makes
// the target ~10x slower (286 vs 2,600 exec/s measured).
struct WorkDir {
  fs::path base, dir;
  WorkDir() {
    std::error_code ec;
    const char* tmpdir = std::getenv("TMPDIR");
    const fs::path root = (!tmpdir || !*tmpdir) && fs::is_directory("/dev/shm", ec)
                              ? fs::path("/dev/shm")
                              : fs::temp_directory_path();
    std::string tmpl = (root / "ic_fuzz_hf_XXXXXX").string();
    check(::mkdtemp(tmpl.data()) != nullptr);
    base = tmpl;
    dir = base / "m";
  }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
};

const fs::path& work_dir() {
  static const WorkDir w;
  return w.dir;
}

void patterns(const ic::hf::Config& c) {
  int64_t n_layers = 4;
  try {
    n_layers = c.get_int_or("num_hidden_layers", 4);
  } catch (const ic::Error&) {
  }
  for (ic::PatternRule r : {ic::PatternRule::THUDM, ic::PatternRule::SGLang, ic::PatternRule::HF}) {
    try {
      (void)ic::ignored_knobs(c, r);
      const std::optional<ic::LayerPattern> p = ic::pattern_from_config(c, n_layers, r);
      if (!p) continue;
      check(p->n_layers() == n_layers && p->is_full(0));
      // The inverse must read back as the same pattern.
      if (const auto fo = ic::as_freq_offset(*p, r))
        check(ic::pattern_from_freq(n_layers, fo->first, fo->second, r) == *p);
    } catch (const ic::Error&) {
    }
  }
}

void folder(const std::string& dir) {
  const ic::hf::Folder f = ic::hf::Folder::open(dir);
  (void)f.tokenizer_json();
  (void)f.tokenizer_config_json();
  for (const auto& [name, shard] : f.weights().weight_map()) {
    try {
      const std::vector<int64_t> shape = f.shape(name);
      const ic::Tensor t = f.read_f32(name, shape);
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      check(t.dtype() == ic::DType::F32 && t.numel() == numel);
      volatile float sink = 0;
      for (int64_t i = 0; i < numel; ++i) sink = sink + t.data<float>()[i];  // ASan: in bounds
    } catch (const ic::Error&) {
    }
  }
  try {
    f.check_all();
  } catch (const ic::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = work_dir();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  unpack(data, size, dir);
  try {
    patterns(ic::hf::Config::load((dir / "config.json").string()));
  } catch (const ic::Error&) {
  }
  try {
    folder(dir.string());
  } catch (const ic::Error&) {
  }
  return 0;
}
