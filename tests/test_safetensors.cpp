#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace ic::safetensors {
namespace {

namespace fs = std::filesystem;

using test::error_of;
using test::TempDir;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A file image from a header text and data bytes (no padding: tests control every byte).
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data = {}) {
  // Sized once and filled by memcpy: GCC 12 misreads vector::insert of a string's range here as
  // an overread (-Wstringop-overread) of an empty vector.
  const uint64_t n = header.size();
  std::vector<uint8_t> b(8 + header.size() + data.size());
  std::memcpy(b.data(), &n, 8);
  if (!header.empty()) std::memcpy(b.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + header.size(), data.data(), data.size());
  return b;
}

std::string source_dir() {
  if (const char* d = std::getenv("IC_SOURCE_DIR"); d && *d) return d;
#ifdef IC_SOURCE_DIR
  return IC_SOURCE_DIR;
#else
  return ".";
#endif
}

// ---------------------------------------------------------------------------------------

TEST(SafetensorsDType, Table) {
  EXPECT_EQ(dtype_size("F64"), 8);
  EXPECT_EQ(dtype_size("BF16"), 2);
  EXPECT_EQ(dtype_size("F8_E4M3"), 1);
  EXPECT_EQ(dtype_size("BOOL"), 1);
  EXPECT_EQ(dtype_size("F4"), 0);
  EXPECT_EQ(dtype_size("f32"), 0);  // names are case-sensitive
  EXPECT_EQ(dtype_from_name("F32"), DType::F32);
  EXPECT_EQ(dtype_from_name("F8_E4M3"), DType::F8_E4M3);
  EXPECT_EQ(dtype_from_name("I32"), DType::I32);
  EXPECT_FALSE(dtype_from_name("I64").has_value());
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32})
    EXPECT_EQ(dtype_from_name(name_from_dtype(t)), t);
  EXPECT_IC_ERROR(name_from_dtype(DType::Q4_0), "Q4_0");
}

// Random bytes of every dtype through Writer::write and File::open; float types also through
// read_f32 against the scalar converters.
TEST(SafetensorsRoundTrip, EveryDType) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  TempDir dir;
  Writer w;
  w.set_metadata("format", "pt");
  w.set_metadata("indexer.layers", "0,1,2");
  w.set_metadata("format", "indexcache");  // replaces

  struct Want {
    std::string name, dtype;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  std::vector<Want> want;

  // Host tensors of every mapped type, in several shapes.
  const std::vector<Shape> shapes = {Shape{3, 5}, Shape{7}, Shape{}, Shape{0, 4}, Shape{2, 1, 3, 2}};
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32}) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      Tensor x = Tensor::empty(shapes[s], t);
      auto* p = static_cast<uint8_t*>(x.raw());
      for (int64_t i = 0; i < x.numel(); ++i) {
        const float v = uni(rng);
        switch (t) {
          case DType::F32: std::memcpy(p + 4 * i, &v, 4); break;
          case DType::F16: { const uint16_t h = f32_to_f16(v); std::memcpy(p + 2 * i, &h, 2); break; }
          case DType::BF16: { const uint16_t h = f32_to_bf16(v); std::memcpy(p + 2 * i, &h, 2); break; }
          case DType::F8_E4M3: p[i] = f32_to_f8e4m3(v); break;
          default: { const int32_t k = static_cast<int32_t>(rng()); std::memcpy(p + 4 * i, &k, 4); }
        }
      }
      const std::string name = fmt::format("t.{}.{}", dtype_name(t), s);
      w.add(name, x);
      std::vector<int64_t> dims(shapes[s].dims.begin(), shapes[s].dims.begin() + shapes[s].rank);
      want.push_back({name, std::string(name_from_dtype(t)), dims,
                      std::vector<uint8_t>(p, p + x.nbytes())});
    }
  }
  // Raw bytes of every dtype the format has, including rank 5 and odd byte counts.
  for (const char* dt : {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I64",
                         "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "C64"}) {
    const std::vector<int64_t> dims = {3, 1, 1, 1, 1};
    std::vector<uint8_t> bytes(static_cast<size_t>(3 * dtype_size(dt)));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    if (std::string(dt) == "BOOL")
      for (uint8_t& b : bytes) b &= 1;
    const std::string name = fmt::format("raw.{}", dt);
    w.add_raw(name, dt, dims, bytes.data(), static_cast<int64_t>(bytes.size()));
    want.push_back({name, dt, dims, bytes});
  }

  const std::string path = dir / "all.safetensors";
  w.write(path);
  const File f = File::open(path);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata("format"), "indexcache");
  EXPECT_EQ(f.metadata("indexer.layers"), "0,1,2");
  EXPECT_EQ(f.find_metadata("nope"), nullptr);
  EXPECT_EQ(f.data_offset() % 8, 0u);
  ASSERT_EQ(f.tensors().size(), want.size());
  for (const Want& x : want) {
    SCOPED_TRACE(x.name);
    const TensorInfo* ti = f.find(x.name);
    ASSERT_NE(ti, nullptr);
    EXPECT_EQ(ti->dtype_name, x.dtype);
    EXPECT_EQ(ti->dims, x.dims);
    ASSERT_EQ(ti->nbytes, static_cast<int64_t>(x.bytes.size()));
    EXPECT_TRUE(std::equal(x.bytes.begin(), x.bytes.end(), ti->data));
    // The writer's layout keeps every tensor aligned to its element size.
    EXPECT_EQ(ti->begin % static_cast<uint64_t>(dtype_size(x.dtype)), 0u);
    EXPECT_EQ(ti->dtype, dtype_from_name(x.dtype));
    if (ti->dtype && x.dims.size() <= 4) {
      const Tensor v = f.tensor_view(*ti);
      EXPECT_EQ(v.dtype(), *ti->dtype);
      EXPECT_EQ(v.raw(), static_cast<const void*>(ti->data));  // borrowed, not copied
      EXPECT_EQ(v.nbytes(), ti->nbytes);
    }
    if (x.dims.size() > 4) {
      EXPECT_IC_ERROR(f.tensor_view(*ti), ti->dtype ? "has rank 5" : "has no DType");
      EXPECT_IC_ERROR(f.read_f32(*ti), "has rank 5");
    }
    const bool is_float = x.dtype == "F32" || x.dtype == "F16" || x.dtype == "BF16" ||
                          x.dtype == "F8_E4M3" || x.dtype == "F8_E5M2";
    if (is_float && x.dims.size() <= 4) {
      const Tensor r = f.read_f32(*ti);
      ASSERT_EQ(r.numel(), ti->numel());
      for (int64_t i = 0; i < r.numel(); ++i) {
        float e = 0;
        const uint8_t* b = x.bytes.data();
        uint16_t h;
        if (x.dtype == "F32") std::memcpy(&e, b + 4 * i, 4);
        else if (x.dtype == "F16") { std::memcpy(&h, b + 2 * i, 2); e = f16_to_f32(h); }
        else if (x.dtype == "BF16") { std::memcpy(&h, b + 2 * i, 2); e = bf16_to_f32(h); }
        else if (x.dtype == "F8_E4M3") e = f8e4m3_to_f32(b[i]);
        else e = f16_to_f32(static_cast<uint16_t>(b[i] << 8));
        const float got = r.data<float>()[i];
        if (std::isnan(e)) EXPECT_TRUE(std::isnan(got));
        else EXPECT_EQ(got, e) << "element " << i;
      }
    } else if (x.dims.size() <= 4) {
      EXPECT_IC_ERROR(f.read_f32(*ti), "read_f32 converts");
    }
  }
  // The in-memory image is the same bytes, and parses the same.
  EXPECT_EQ(w.bytes(), read_bytes(path));
  EXPECT_EQ(File::from_buffer(w.bytes()).tensors().size(), want.size());
  EXPECT_IC_ERROR(f.tensor("no.such"), "tensor 'no.such' not found in " + path);
  EXPECT_IC_ERROR(f.metadata("no.key"), "metadata key 'no.key' not found in " + path);
  EXPECT_IC_ERROR(f.tensor_view("raw.I64"), "has dtype I64");
}

TEST(SafetensorsWriter, DeterministicAndOrdered) {
  const std::vector<uint8_t> a(5, 1), b(8, 2), c(6, 3), d(4, 4);
  auto build = [&](bool reverse) {
    Writer w;
    std::vector<std::function<void()>> adds = {
        [&] { w.add_raw("z.u8", "U8", {5}, a.data(), 5); },
        [&] { w.add_raw("a.f64", "F64", {1}, b.data(), 8); },
        [&] { w.add_raw("m.bf16", "BF16", {3}, c.data(), 6); },
        [&] { w.add_raw("b.f32", "F32", {1}, d.data(), 4); },
    };
    if (reverse) std::reverse(adds.begin(), adds.end());
    for (auto& f : adds) f();
    w.set_metadata("k", "v");
    return w.bytes();
  };
  const std::vector<uint8_t> x = build(false);
  EXPECT_EQ(x, build(true));
  const File f = File::from_buffer(x);
  // Reference layout: larger element types first, then names; the odd-sized U8 last.
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors()[0].name, "a.f64");
  EXPECT_EQ(f.tensors()[1].name, "b.f32");
  EXPECT_EQ(f.tensors()[2].name, "m.bf16");
  EXPECT_EQ(f.tensors()[3].name, "z.u8");
  // The header is padded with spaces to a multiple of 8.
  EXPECT_EQ(f.header_size() % 8, 0u);
  EXPECT_EQ(x[8 + f.header_size() - 1], ' ');
}

TEST(SafetensorsWriter, RejectsBadInput) {
  Writer w;
  const std::vector<uint8_t> b(8);
  w.add_raw("x", "U8", {8}, b.data(), 8);
  EXPECT_IC_ERROR(w.add_raw("x", "U8", {8}, b.data(), 8), "duplicate tensor name 'x'");
  EXPECT_IC_ERROR(w.add_raw("__metadata__", "U8", {8}, b.data(), 8), "reserved");
  EXPECT_IC_ERROR(w.add_raw("", "U8", {8}, b.data(), 8), "empty tensor name");
  EXPECT_IC_ERROR(w.add_raw("y", "Q4_0", {8}, b.data(), 8), "unknown dtype 'Q4_0'");
  EXPECT_IC_ERROR(w.add_raw("y", "F32", {3}, b.data(), 8), "need 12");
  EXPECT_IC_ERROR(w.add_raw("y", "U8", {-1}, b.data(), 8), "negative dimension");
  EXPECT_IC_ERROR(w.add_raw("y", "U8", {int64_t{1} << 62, 8}, b.data(), 8), "overflows");
  EXPECT_IC_ERROR(w.add("q", Tensor::zeros(Shape{32}, DType::Q8_0)), "tensor 'q'");
  EXPECT_IC_ERROR(w.add("u", Tensor()), "undefined");
  w.set_metadata("bad", std::string("\xff\xfe", 2));
  EXPECT_IC_ERROR(w.bytes(), "UTF-8");
}

TEST(SafetensorsWriter, AtomicReplaceAndFailure) {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  std::vector<uint8_t> small(16, 7);
  Writer w1;
  w1.add_raw("step", "U8", {16}, small.data(), 16);
  w1.write(path);
  const std::vector<uint8_t> first = read_bytes(path);
  ASSERT_EQ(File::open(path).tensor("step").nbytes, 16);

  // Overwrite with a new file: replaced whole, no temporary left behind.
  std::vector<uint8_t> big(4096, 9);
  Writer w2;
  w2.add_raw("step", "U8", {4096}, big.data(), 4096);
  w2.write(path);
  EXPECT_EQ(File::open(path).tensor("step").nbytes, 4096);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename(), "ckpt.safetensors");

  // A writer that fails mid-file (a child process limited to 8 KiB of file size) leaves the
  // previous checkpoint untouched and removes its temporary.
  std::vector<uint8_t> huge(1 << 16, 5);
  Writer w3;
  w3.add_raw("step", "U8", {1 << 16}, huge.data(), 1 << 16);
  const std::vector<uint8_t> before = read_bytes(path);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim {8192, 8192};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int code = 3;
    try {
      w3.write(path);
      code = 1;
    } catch (const Error& e) {
      code = std::string(e.what()).find("write to") != std::string::npos ? 0 : 2;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error, 2: wrong message";
  EXPECT_EQ(read_bytes(path), before);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename(), "ckpt.safetensors");

  EXPECT_IC_ERROR(w1.write(dir / "no/such/dir/x.safetensors"), "cannot create");
}

// Written by scripts/make-safetensors-vectors with the reference implementation.
TEST(SafetensorsInterop, ReadsPythonFixture) {
  const std::string path = source_dir() + "/tests/data/safetensors_python.safetensors";
  ASSERT_TRUE(fs::exists(path)) << path;
  const File f = File::open(path);
  EXPECT_EQ(f.metadata("format"), "pt");
  EXPECT_EQ(f.metadata("indexcache.fixture"), "1");
  EXPECT_EQ(f.tensors().size(), 12u);

  auto floats = [&](const char* name) {
    const Tensor t = f.read_f32(name);
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  EXPECT_EQ(f.tensor("f32").shape(), (Shape{2, 3}));
  EXPECT_EQ(floats("f32"), (std::vector<float>{-1, -0.5, 0, 0.5, 1, 1.5}));
  EXPECT_EQ(floats("f16"), (std::vector<float>{0.5, -2, 65504, std::ldexp(1.0f, -24)}));
  EXPECT_EQ(f.tensor("bf16").dtype, DType::BF16);
  EXPECT_EQ(floats("bf16"), (std::vector<float>{1, -2.5, 0.15625, 65536}));
  EXPECT_EQ(floats("f8_e4m3"), (std::vector<float>{1, -2, 448, std::ldexp(1.0f, -9)}));
  EXPECT_EQ(floats("f8_e5m2"), (std::vector<float>{1, -2, std::ldexp(1.0f, -16)}));
  EXPECT_EQ(f.tensor("empty").shape(), (Shape{0, 3}));
  EXPECT_EQ(f.read_f32("empty").numel(), 0);

  const TensorInfo& f64 = f.tensor("f64");
  EXPECT_TRUE(f64.dims.empty());
  double d;
  std::memcpy(&d, f64.data, 8);
  EXPECT_EQ(d, 3.25);
  const Tensor i32 = f.tensor_view("i32");
  EXPECT_EQ(i32.dtype(), DType::I32);
  EXPECT_EQ((std::vector<int32_t>(i32.data<int32_t>(), i32.data<int32_t>() + 3)),
            (std::vector<int32_t>{-7, 0, 2147483647}));
  int64_t i64[2];
  std::memcpy(i64, f.tensor("i64").data, 16);
  EXPECT_EQ(i64[0], -1);
  EXPECT_EQ(i64[1], int64_t{1} << 40);
  const TensorInfo& u8 = f.tensor("u8");
  EXPECT_EQ((std::vector<uint8_t>(u8.data, u8.data + 5)), (std::vector<uint8_t>{0, 1, 2, 254, 255}));
  const TensorInfo& flags = f.tensor("flags");
  EXPECT_EQ(flags.dtype_name, "BOOL");
  EXPECT_EQ((std::vector<uint8_t>(flags.data, flags.data + 3)), (std::vector<uint8_t>{1, 0, 1}));
  const TensorInfo& r5 = f.tensor("rank5");
  EXPECT_EQ(r5.dims, (std::vector<int64_t>{1, 1, 1, 1, 2}));
  EXPECT_IC_ERROR(r5.shape(), "tensor 'rank5' has rank 5");

  // Our writer, given the same tensors, lays them out exactly as the reference did. (The
  // reference orders __metadata__ keys by hash, so compare that map rather than its bytes.)
  Writer w;
  for (const TensorInfo& t : f.tensors()) w.add_raw(t.name, t.dtype_name, t.dims, t.data, t.nbytes);
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  const std::vector<uint8_t> ours = w.bytes();
  const std::vector<uint8_t> theirs = read_bytes(path);
  ASSERT_EQ(ours.size(), theirs.size());
  const File g = File::from_buffer(ours);
  EXPECT_EQ(g.header_size(), f.header_size());
  EXPECT_TRUE(std::equal(ours.begin() + 8 + g.header_size(), ours.end(),
                         theirs.begin() + 8 + f.header_size()));
  ASSERT_EQ(g.tensors().size(), f.tensors().size());
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    EXPECT_EQ(g.tensors()[k].name, f.tensors()[k].name);
    EXPECT_EQ(g.tensors()[k].begin, f.tensors()[k].begin);
  }
  EXPECT_EQ(g.metadata(), f.metadata());
}

bool python_has_safetensors() {
  return std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") == 0;
}

// Python reads a file our writer made and the reference writer, given what it read, produces
// the same bytes. Runs only where python3 has the safetensors package.
TEST(SafetensorsInterop, PythonReadsOurFile) {
  if (!python_has_safetensors()) GTEST_SKIP() << "python3 with safetensors not available";
  TempDir dir;
  std::mt19937 rng(99);
  Writer w;
  w.set_metadata("written.by", "indexcache");  // one key: the reference orders keys by hash
  int n = 0;
  for (const char* dt : {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16",
                         "I8", "U64", "U32", "U16", "U8", "BOOL"}) {
    const std::vector<int64_t> dims = {static_cast<int64_t>(1 + rng() % 5), 3};
    std::vector<uint8_t> b(static_cast<size_t>(dims[0] * 3 * dtype_size(dt)));
    for (uint8_t& x : b) x = static_cast<uint8_t>(std::string(dt) == "BOOL" ? rng() & 1 : rng());
    w.add_raw(fmt::format("layer.{}.{}", n++ % 4, dt), dt, dims, b.data(),
              static_cast<int64_t>(b.size()));
  }
  w.add("indexer.scale", Tensor::zeros(Shape{2, 2}, DType::F32));
  const std::string path = dir / "ours.safetensors";
  w.write(path);

  const std::string script = dir / "check.py";
  std::ofstream(script) << R"PY(
import sys
import numpy as np
import safetensors
from safetensors import deserialize, safe_open, serialize
path = sys.argv[1]
blob = open(path, "rb").read()
with safe_open(path, framework="numpy") as f:
    metadata = f.metadata()
    # numpy cannot hold BF16/F8; check one plain tensor through the numpy path.
    assert f.get_tensor("indexer.scale").shape == (2, 2)
names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
         "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
         "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
         "U8": "uint8", "BOOL": "bool"}
tensors = deserialize(blob)
if hasattr(safetensors, "TensorSpec"):
    keep = []
    specs = {}
    for name, t in tensors:
        a = np.frombuffer(bytes(t["data"]), dtype=np.uint8).copy()
        keep.append(a)
        specs[name] = safetensors.TensorSpec(dtype=names[t["dtype"]], shape=t["shape"],
                                             data_ptr=a.ctypes.data, data_len=a.nbytes)
    again = serialize(specs, metadata=metadata)
else:
    again = serialize({n: dict(t) for n, t in tensors}, metadata=metadata)
assert again == blob, "reference writer produced different bytes"
print("OK", len(tensors), metadata["written.by"])
)PY";
  FILE* p = ::popen(fmt::format("python3 '{}' '{}' 2>&1", script, path).c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int rc = ::pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "OK 16 indexcache\n");
}

// ---------------------------------------------------------------------------------------
// Corrupt input: every case is an ic::Error that says what is wrong, never a crash.

const std::string kOne = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::vector<uint8_t> kEight(8, 0);

TEST(SafetensorsCorrupt, EveryTruncation) {
  const std::string path = source_dir() + "/tests/data/safetensors_python.safetensors";
  const std::vector<uint8_t> full = read_bytes(path);
  ASSERT_GT(full.size(), 100u);
  for (size_t n = 0; n < full.size(); ++n) {
    const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = error_of([&] { File::from_buffer(cut, "cut.safetensors"); });
    EXPECT_NE(msg.find("safetensors cut.safetensors: "), std::string::npos)
        << "at " << n << ": " << msg;
  }
  EXPECT_NO_THROW(File::from_buffer(full));
}

TEST(SafetensorsCorrupt, HeaderLength) {
  EXPECT_IC_ERROR(File::from_buffer({}), "too short for the 8-byte header length");
  EXPECT_IC_ERROR(File::from_buffer({1, 0, 0}), "too short");
  std::vector<uint8_t> b = image(kOne, kEight);
  b[6] = 0x01;  // 2^48 + ...
  EXPECT_IC_ERROR(File::from_buffer(b), "exceeds the 100000000-byte limit");
  b = image(kOne, kEight);
  b[0] = static_cast<uint8_t>(b[0] + 9);  // points past the data
  EXPECT_IC_ERROR(File::from_buffer(b), "runs past the end of the file");
  b = image(kOne, kEight);
  b[0] = static_cast<uint8_t>(b[0] - 1);  // cuts the closing brace
  EXPECT_IC_ERROR(File::from_buffer(b), "not valid JSON");
  EXPECT_IC_ERROR(File::from_buffer(image("")), "not valid JSON");
}

TEST(SafetensorsCorrupt, HeaderJson) {
  auto err = [](const std::string& h, const std::vector<uint8_t>& d = {}) {
    return error_of([&] { File::from_buffer(image(h, d), "bad.st"); });
  };
  auto expect = [&](const std::string& h, const std::string& what,
                    const std::vector<uint8_t>& d = {}) {
    const std::string m = err(h, d);
    EXPECT_NE(m.find(what), std::string::npos) << h << "\n -> " << m;
    EXPECT_EQ(m.rfind("safetensors bad.st: ", 0), 0u) << m;
  };
  expect("not json", "not valid JSON");
  expect("{\"a\":1,}", "not valid JSON");
  expect(std::string("{\"a\xff\":1}"), "not valid JSON");  // invalid UTF-8
  expect("[1, 2]", "header is a JSON array, expected an object");
  expect("\"x\"", "expected an object");
  expect(R"({"a": 5})", "tensor 'a': entry is a JSON number");
  expect(R"({"a": {"shape":[1],"data_offsets":[0,4]}})", "no \"dtype\"");
  expect(R"({"a": {"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "dtype is a JSON number");
  expect(R"({"a": {"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "unknown dtype 'F33'");
  expect(R"({"a": {"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", "sub-byte");
  expect(R"({"a": {"dtype":"F32","data_offsets":[0,4]}})", "no \"shape\"");
  expect(R"({"a": {"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "shape is a JSON string");
  expect(R"({"a": {"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "dimension -1 is negative");
  expect(R"({"a": {"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "not an integer");
  expect(R"({"a": {"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", "JSON array, expected a non-negative integer");
  expect(R"({"a": {"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})", "does not fit in int64");
  expect(R"({"a": {"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "overflows int64");
  expect(R"({"a": {"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}})", "byte size");
  expect(R"({"a": {"dtype":"F32","shape":[1]}})", "no \"data_offsets\"");
  expect(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[0]}})", "expected an array [begin, end]");
  expect(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":{"b":0}}})", "expected an array [begin, end]");
  expect(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "end before they begin");
  expect(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", "data_offsets end is a JSON string");
  expect(R"({"__metadata__": [1], "a": {"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "__metadata__ is a JSON array", {0});
  expect(R"({"__metadata__": {"k": 1}})", "__metadata__ value of 'k' is a JSON number");
  expect(R"({"__metadata__": {"k": "v", "k": "w"}})", "duplicate key 'k'");
  expect(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
         "duplicate key 'a'", {0});
  expect(R"({"a": {"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "duplicate key 'dtype'", {0});
  expect(std::string(64, '[') + std::string(64, ']'), "nests deeper than 8");
}

TEST(SafetensorsCorrupt, Layout) {
  auto expect = [](const std::string& h, const std::vector<uint8_t>& d, const std::string& what) {
    const std::string m = error_of([&] { File::from_buffer(image(h, d), "bad.st"); });
    EXPECT_NE(m.find(what), std::string::npos) << h << "\n -> " << m;
  };
  const std::vector<uint8_t> d8(8), d12(12), d16(16);
  // Size mismatch: shape [2] of F32 is 8 bytes.
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", d12,
         "span 12 bytes but shape [2] of F32 needs 8 bytes");
  // Out of range.
  expect(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8,
         "run past the end of the data section (8 bytes");
  expect(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
         d8, "does not fit in int64");
  // Overlap.
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
         d12, "tensor 'b' data_offsets [4, 12] overlap tensor 'a'");
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
         d8, "overlap");
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
         d8, "tensor 'z' data_offsets [4, 4] overlap");
  // Hole between tensors, and bytes after the last one.
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
         d16, "hole in the data section: bytes [4, 8) before tensor 'b'");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8, "hole in the data section: bytes [0, 4)");
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d12, "trailing bytes belong to no tensor");
  expect(R"({})", d8, "data section has 8 bytes");
  // Zero-size tensors at the seams are fine, as is an empty file with no tensors.
  EXPECT_NO_THROW(File::from_buffer(image(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0,5],"data_offsets":[8,8]},"y":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
      d8)));
  EXPECT_NO_THROW(File::from_buffer(image("{}")));
  // Tolerated like the reference: surrounding whitespace, null metadata, unknown fields.
  const File f = File::from_buffer(image(
      R"(  {"__metadata__":null,"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8],"extra":[1]}}   )",
      d8));
  EXPECT_EQ(f.tensor("a").nbytes, 8);
}

// A misaligned tensor (legal in files from other tools) comes back as an aligned copy.
TEST(SafetensorsRead, UnalignedTensorIsCopied) {
  std::vector<uint8_t> data(9);
  const float v[2] = {1.5f, -2.0f};
  std::memcpy(data.data() + 1, v, 8);
  std::string h =
      R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},"e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]}})";
  while ((8 + h.size()) % 4 != 0) h += ' ';  // data section 4-aligned, so 'a' at +1 is not
  const File f = File::from_buffer(image(h, data));
  const TensorInfo& a = f.tensor("a");
  ASSERT_NE(reinterpret_cast<uintptr_t>(a.data) % 4, 0u);
  const Tensor t = f.tensor_view("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  EXPECT_EQ(t.data<float>()[0], 1.5f);
  EXPECT_EQ(t.data<float>()[1], -2.0f);
  EXPECT_EQ(f.read_f32("a").data<float>()[1], -2.0f);
  // Empty tensors take the same paths with no bytes (found by the fuzzer: memcpy into the
  // null storage of an empty tensor).
  EXPECT_EQ(f.tensor_view("e").numel(), 0);
  EXPECT_EQ(f.read_f32("e").numel(), 0);
}

TEST(SafetensorsRead, OpenErrors) {
  TempDir dir;
  EXPECT_IC_ERROR(File::open(dir / "missing.safetensors"), "cannot open safetensors file");
  EXPECT_IC_ERROR(File::open(dir.path.string()), "not a regular file");
  std::ofstream(dir / "empty.safetensors").close();
  EXPECT_IC_ERROR(File::open(dir / "empty.safetensors"), "is empty");
  std::ofstream(dir / "junk.safetensors") << "definitely not safetensors";
  EXPECT_IC_ERROR(File::open(dir / "junk.safetensors"), "safetensors " + (dir / "junk.safetensors"));
}

// The mapping outlives the File when a view holds it.
TEST(SafetensorsRead, ViewKeepsMappingAlive) {
  TempDir dir;
  Writer w;
  Tensor x = Tensor::empty(Shape{4}, DType::F32);
  for (int i = 0; i < 4; ++i) x.data<float>()[i] = static_cast<float>(i) + 0.25f;
  w.add("x", x);
  w.write(dir / "v.safetensors");
  Tensor view;
  {
    const File f = File::open(dir / "v.safetensors");
    view = f.tensor_view("x");
  }
  fs::remove(dir / "v.safetensors");
  EXPECT_EQ(view.data<float>()[3], 3.25f);
}

// ---------------------------------------------------------------------------------------
// Sharded checkpoints.

void write_index(const std::string& path, const std::string& weight_map) {
  std::ofstream(path) << R"({"metadata": {"total_size": 28, "note": "x"}, "weight_map": )"
                      << weight_map << "}";
}

struct TwoShards {
  TempDir dir;
  TwoShards() {
    Writer a, b;
    Tensor x = Tensor::empty(Shape{2}, DType::F32);
    x.data<float>()[0] = 1.0f;
    x.data<float>()[1] = 2.0f;
    a.add("model.embed.weight", x);
    const uint16_t h[3] = {f32_to_bf16(0.5f), f32_to_bf16(-1.0f), f32_to_bf16(4.0f)};
    a.add_raw("model.layers.0.w", "BF16", {3}, h, 6);
    const uint8_t q[4] = {0x38, 0xC0, 0x7E, 0x01};
    b.add_raw("model.layers.1.w", "F8_E4M3", {2, 2}, q, 4);
    const float s[2] = {0.5f, 2.0f};
    b.add_raw("model.layers.1.w_scale_inv", "F32", {2}, s, 8);
    a.write(dir / "model-00001-of-00002.safetensors");
    b.write(dir / "model-00002-of-00002.safetensors");
  }
};

TEST(SafetensorsSharded, ReadsAcrossShards) {
  TwoShards s;
  write_index(s.dir / "model.safetensors.index.json", R"({
      "model.embed.weight": "model-00001-of-00002.safetensors",
      "model.layers.0.w": "model-00001-of-00002.safetensors",
      "model.layers.1.w": "model-00002-of-00002.safetensors",
      "model.layers.1.w_scale_inv": "model-00002-of-00002.safetensors"})");
  for (const std::string& p : {s.dir.path.string(), s.dir / "model.safetensors.index.json"}) {
    SCOPED_TRACE(p);
    const ShardedModel m = ShardedModel::open(p);
    EXPECT_EQ(m.weight_map().size(), 4u);
    EXPECT_EQ(m.shard_names().size(), 2u);
    EXPECT_EQ(m.index_metadata().at("total_size"), "28");
    EXPECT_EQ(m.index_metadata().at("note"), "x");
    EXPECT_TRUE(m.has("model.layers.1.w"));
    EXPECT_EQ(m.find("nope"), nullptr);
    EXPECT_IC_ERROR(m.tensor("nope"), "tensor 'nope' not found in");
    EXPECT_EQ(m.tensor("model.layers.1.w").dtype, DType::F8_E4M3);
    EXPECT_EQ(m.tensor_view("model.embed.weight").data<float>()[1], 2.0f);
    const Tensor q = m.read_f32("model.layers.1.w");
    EXPECT_EQ(q.shape(), (Shape{2, 2}));
    EXPECT_EQ(q.data<float>()[2], 448.0f);
    EXPECT_EQ(m.read_f32("model.layers.0.w").data<float>()[1], -1.0f);
    EXPECT_EQ(m.shard("model-00002-of-00002.safetensors").tensors().size(), 2u);
    EXPECT_IC_ERROR(m.shard("other.safetensors"), "names no shard 'other.safetensors'");
    EXPECT_NO_THROW(m.check_all());
  }
  // A single file, or a directory holding only model.safetensors, is a one-shard model.
  const ShardedModel one = ShardedModel::open(s.dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(one.weight_map().size(), 2u);
  EXPECT_EQ(one.read_f32("model.layers.1.w_scale_inv").data<float>()[1], 2.0f);
  TempDir lone;
  fs::copy_file(s.dir / "model-00001-of-00002.safetensors", lone / "model.safetensors");
  EXPECT_EQ(ShardedModel::open(lone.path.string()).tensor("model.layers.0.w").nbytes, 6);
}

TEST(SafetensorsSharded, Errors) {
  TwoShards s;
  const std::string index = s.dir / "model.safetensors.index.json";
  write_index(index, R"({"model.embed.weight": "model-00001-of-00002.safetensors",
                         "model.layers.9.w": "model-00003-of-00003.safetensors",
                         "model.layers.8.w": "model-00003-of-00003.safetensors"})");
  EXPECT_IC_ERROR(ShardedModel::open(index),
                  "model-00003-of-00003.safetensors is missing (the index maps 2 tensors to it, "
                  "e.g. 'model.layers.8.w')");

  // Mapped to a shard that does not hold it: found when the tensor is asked for.
  write_index(index, R"({"model.embed.weight": "model-00001-of-00002.safetensors",
                         "model.layers.1.w": "model-00001-of-00002.safetensors"})");
  const ShardedModel m = ShardedModel::open(s.dir.path.string());
  EXPECT_NE(m.find("model.embed.weight"), nullptr);
  EXPECT_IC_ERROR(m.find("model.layers.1.w"),
                  "maps tensor 'model.layers.1.w' to shard " +
                      (s.dir / "model-00001-of-00002.safetensors") +
                      ", but that shard does not contain it");
  EXPECT_IC_ERROR(m.check_all(), "does not contain it");

  write_index(index, R"({"x": "../model-00001-of-00002.safetensors"})");
  EXPECT_IC_ERROR(ShardedModel::open(index), "not a relative path inside");
  write_index(index, R"({"x": "/etc/passwd"})");
  EXPECT_IC_ERROR(ShardedModel::open(index), "not a relative path inside");
  write_index(index, R"({"x": 3})");
  EXPECT_IC_ERROR(ShardedModel::open(index), "weight_map entry 'x' is a JSON number");
  write_index(index, R"({"x": "a", "x": "b"})");
  EXPECT_IC_ERROR(ShardedModel::open(index), "duplicate key 'x'");
  write_index(index, "[]");
  EXPECT_IC_ERROR(ShardedModel::open(index), "\"weight_map\" is a JSON array");
  std::ofstream(index) << R"({"metadata": {}})";
  EXPECT_IC_ERROR(ShardedModel::open(index), "safetensors index " + index + ": index has no \"weight_map\"");
  std::ofstream(index) << "{";
  EXPECT_IC_ERROR(ShardedModel::open(index), "not valid JSON");

  // A shard that exists but is corrupt fails when first used, naming the shard file.
  write_index(index, R"({"x": "broken.safetensors"})");
  std::ofstream(s.dir / "broken.safetensors") << "not a safetensors file at all";
  const ShardedModel b = ShardedModel::open(index);
  EXPECT_IC_ERROR(b.tensor("x"), "safetensors " + (s.dir / "broken.safetensors"));

  TempDir empty;
  EXPECT_IC_ERROR(ShardedModel::open(empty.path.string()), "has neither");
  EXPECT_IC_ERROR(ShardedModel::open(empty / "nothing"), "does not exist");
}

// Paths the system cannot look at (not merely absent) are ic::Errors naming the path, not
// std::filesystem_error: an index that is a loop of symlinks, a name over NAME_MAX, and a
// directory whose index path would pass PATH_MAX.
TEST(SafetensorsSharded, UnreadablePathsAreIcErrors) {
  TempDir loop;
  fs::create_symlink("model.safetensors.index.json", loop / "model.safetensors.index.json");
  EXPECT_IC_ERROR(ShardedModel::open(loop.path.string()),
                  "cannot look at checkpoint index " + (loop / "model.safetensors.index.json"));

  TempDir dir;
  const std::string long_name = dir / std::string(300, 'x');
  EXPECT_IC_ERROR(ShardedModel::open(long_name), "cannot look at checkpoint " + long_name);

  // Components of 200 characters up to a directory just under PATH_MAX (4096 with its NUL):
  // the directory itself can be looked at, its index path cannot.
  std::string deep = dir.path.string();
  const size_t want = 4096 - 1 - std::string("/model.safetensors.index.json").size() + 10;
  while (deep.size() + 201 < want) deep += "/" + std::string(200, 'd');
  deep += "/" + std::string(want - deep.size() - 1, 'e');
  ASSERT_EQ(deep.size(), want);
  std::error_code ec;
  fs::create_directories(deep, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_IC_ERROR(ShardedModel::open(deep), "cannot look at checkpoint index " + deep);
}

}  // namespace
}  // namespace ic::safetensors
