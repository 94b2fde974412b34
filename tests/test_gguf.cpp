// GGUF reader and writer: round trips through the writer, the real model, and systematic
// corruption (truncation at every offset, byte flips, targeted bad fields), each of which
// must give an ic::Error with a telling message and never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "test_util.h"

namespace ic::gguf {
namespace {

using Bytes = std::vector<uint8_t>;

std::vector<uint8_t> random_bytes(std::mt19937& rng, int64_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// A small file touching every value type, nested arrays and several tensor types.
Writer make_writer(uint64_t alignment = 32, uint32_t version = 3) {
  std::mt19937 rng(11);
  Writer w(version);
  w.set_alignment(alignment);
  w.add_string("general.architecture", "llama");
  w.add("t.u8", Value::make_int(ValueType::UINT8, 200));
  w.add("t.i8", Value::make_int(ValueType::INT8, -100));
  w.add("t.u16", Value::make_int(ValueType::UINT16, 60000));
  w.add("t.i16", Value::make_int(ValueType::INT16, -30000));
  w.add_uint32("t.u32", 4000000000u);
  w.add_int32("t.i32", -2000000000);
  w.add_float32("t.f32", 1.5f);
  w.add_bool("t.bool", true);
  w.add_string("t.str", std::string("a\0b", 3));
  w.add_uint64("t.u64", 1ull << 40);
  w.add_int64("t.i64", -(1ll << 50));
  w.add_float64("t.f64", 0.1);
  w.add_string("t.empty", "");
  w.add_string_array("t.strs", {"x", "", "hello"});
  w.add("t.ints", Value::make_int_array(ValueType::INT32, {1, -2, 3}));
  w.add("t.u8s", Value::make_int_array(ValueType::UINT8, {0, 255}));
  w.add("t.bools", Value::make_bool_array({true, false}));
  w.add("t.f32s", Value::make_float_array(ValueType::FLOAT32, {0.5, -2.0}));
  w.add("t.f64s", Value::make_float_array(ValueType::FLOAT64, {1e300}));
  w.add("t.noarr", Value::make_int_array(ValueType::INT64, {}));
  w.add("t.nested", Value::make_array_array({Value::make_int_array(ValueType::UINT16, {7}),
                                             Value::make_string_array({"in"})}));
  w.add_uint64("t.big64", ~0ull);
  const Bytes f32 = random_bytes(rng, 3 * 5 * 4);
  w.add_tensor("tensor_f32", {5, 3}, DType::F32, f32.data(), static_cast<int64_t>(f32.size()));
  const Bytes q8 = random_bytes(rng, 2 * 34);
  w.add_tensor("tensor_q8", {32, 2}, DType::Q8_0, q8.data(), static_cast<int64_t>(q8.size()));
  const Bytes q4k = random_bytes(rng, 144);
  w.add_tensor("tensor_q4k", {256, 1, 1, 1}, DType::Q4_K, q4k.data(), 144);
  const Bytes bf = random_bytes(rng, 2 * 7);
  w.add_tensor("tensor_bf16", {7}, DType::BF16, bf.data(), 14);
  return w;
}

// Position of the first occurrence of `s` in b (the test fails if absent).
size_t find_str(const Bytes& b, std::string_view s) {
  for (size_t k = 0; k + s.size() <= b.size(); ++k)
    if (std::memcmp(b.data() + k, s.data(), s.size()) == 0) return k;
  ADD_FAILURE() << "'" << s << "' not in the file";
  return 0;
}

template <typename T>
void poke(Bytes& b, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), b.size());
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Where fields of a tensor info start: right after its name.
struct InfoPos {
  size_t n_dims, ne0, type, offset;
};
InfoPos tensor_info_pos(const Bytes& b, std::string_view name, int rank) {
  const size_t p = find_str(b, name) + name.size();
  return {p, p + 4, p + 4 + 8 * static_cast<size_t>(rank), p + 8 + 8 * static_cast<size_t>(rank)};
}

// Parses b and expects an ic::Error whose message contains `needle`.
void expect_error(const Bytes& b, std::string_view needle) {
  try {
    File::from_buffer(b, "corrupt.gguf");
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find("corrupt.gguf"), std::string::npos) << "message: " << msg;
  }
}

TEST(Gguf, RoundTripsEveryValueTypeAndTensor) {
  for (uint64_t alignment : {32, 1, 64, 256}) {
    const Writer w = make_writer(alignment);
    const File f = File::from_buffer(w.bytes());
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_int("t.u8"), 200);
    EXPECT_EQ(f.get_int("t.i8"), -100);
    EXPECT_EQ(f.get_int("t.u16"), 60000);
    EXPECT_EQ(f.get_int("t.i16"), -30000);
    EXPECT_EQ(f.get_int("t.u32"), 4000000000LL);
    EXPECT_EQ(f.get_int("t.i32"), -2000000000);
    EXPECT_EQ(f.get_float("t.f32"), 1.5);
    EXPECT_TRUE(f.get_bool("t.bool"));
    EXPECT_EQ(f.get_int("t.bool"), 1);
    EXPECT_EQ(f.get_string("t.str"), std::string("a\0b", 3));
    EXPECT_EQ(f.get_int("t.u64"), 1ll << 40);
    EXPECT_EQ(f.get_int("t.i64"), -(1ll << 50));
    EXPECT_EQ(f.get_float("t.f64"), 0.1);
    EXPECT_EQ(f.get_float("t.i32"), -2e9);
    EXPECT_EQ(f.get_string("t.empty"), "");
    EXPECT_EQ(f.get_string_array("t.strs"), (std::vector<std::string>{"x", "", "hello"}));
    EXPECT_EQ(f.get_int_array("t.ints"), (std::vector<int64_t>{1, -2, 3}));
    EXPECT_EQ(f.get_int_array("t.u8s"), (std::vector<int64_t>{0, 255}));
    EXPECT_EQ(f.get_int_array("t.bools"), (std::vector<int64_t>{1, 0}));
    EXPECT_EQ(f.get_float_array("t.f32s"), (std::vector<double>{0.5, -2.0}));
    EXPECT_EQ(f.get_float_array("t.f64s"), (std::vector<double>{1e300}));
    EXPECT_EQ(f.get_float_array("t.ints"), (std::vector<double>{1, -2, 3}));
    EXPECT_TRUE(f.get_int_array("t.noarr").empty());
    const Value* nested = f.find("t.nested");
    ASSERT_NE(nested, nullptr);
    ASSERT_EQ(nested->elem_type, ValueType::ARRAY);
    ASSERT_EQ(nested->arrays.size(), 2u);
    EXPECT_EQ(nested->arrays[0].ints, (std::vector<int64_t>{7}));
    EXPECT_EQ(nested->arrays[1].strings, (std::vector<std::string>{"in"}));
    EXPECT_EQ(f.find("t.big64")->i, -1);  // bit pattern of 2^64-1

    // Tensors: names, shapes, types, bytes, alignment.
    ASSERT_EQ(f.tensors().size(), 4u);
    const TensorInfo& q4k = f.tensor("tensor_q4k");
    EXPECT_EQ(q4k.type, DType::Q4_K);
    EXPECT_EQ(q4k.shape(), (Shape{1, 1, 1, 256}));
    EXPECT_EQ(f.tensor("tensor_f32").shape(), (Shape{3, 5}));
    EXPECT_EQ(f.tensor("tensor_bf16").nbytes, 14);
    for (const TensorInfo& ti : f.tensors()) {
      EXPECT_EQ(ti.offset % alignment, 0u) << ti.name;
      EXPECT_EQ((f.data_offset() + ti.offset) % alignment, 0u) << ti.name;
    }
    std::mt19937 rng(11);  // same stream as make_writer: the first tensor's bytes
    const Bytes f32 = random_bytes(rng, 60);
    EXPECT_EQ(std::memcmp(f.tensor("tensor_f32").data, f32.data(), 60), 0);
    const Bytes q8 = random_bytes(rng, 68);
    const Tensor view = f.tensor_view(f.tensor("tensor_q8"));
    EXPECT_EQ(view.dtype(), DType::Q8_0);
    EXPECT_EQ(view.shape(), (Shape{2, 32}));
    EXPECT_EQ(std::memcmp(view.raw(), q8.data(), 68), 0);
  }
}

TEST(Gguf, Version2AndEmptyFileRoundTrip) {
  Writer w(2);
  w.add_uint32("only", 5);
  const File f = File::from_buffer(w.bytes());
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_int("only"), 5);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(File::from_buffer(Writer().bytes()).metadata().empty());
}

TEST(Gguf, TensorViewOutlivesFile) {
  Tensor view;
  {
    const File f = File::from_buffer(make_writer().bytes());
    view = f.tensor_view(f.tensor("tensor_f32"));
  }
  std::mt19937 rng(11);
  const Bytes f32 = random_bytes(rng, 60);
  EXPECT_EQ(std::memcmp(view.raw(), f32.data(), 60), 0);  // the buffer is kept alive
}

TEST(Gguf, OpensFilesFromDiskAndReportsMissingOnes) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("ic_gguf_test_" + std::to_string(::getpid()) + ".gguf")).string();
  make_writer(64).write(path);
  {
    File f = File::open(path);
    EXPECT_EQ(f.path(), path);
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.get_int("t.u16"), 60000);
    File moved = std::move(f);
    EXPECT_EQ(moved.tensor("tensor_q8").nbytes, 68);
  }
  std::filesystem::remove(path);
  try {
    File::open(path);
    ADD_FAILURE() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  const std::string empty = path + ".empty";
  { std::ofstream(empty).flush(); }
  EXPECT_THROW(File::open(empty), Error);
  std::filesystem::remove(empty);
}

TEST(Gguf, GettersNameTheKeyOnMissingOrWrongType) {
  const File f = File::from_buffer(make_writer().bytes(), "g.gguf");
  auto expect_msg = [](auto fn, std::string_view needle) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { f.get_int("t.str"); }, "'t.str'");
  expect_msg([&] { f.get_string("t.u8"); }, "UINT8");
  expect_msg([&] { f.get_bool("t.u8"); }, "expected BOOL");
  expect_msg([&] { f.get_float("t.strs"); }, "ARRAY of STRING");
  expect_msg([&] { f.get_string_array("t.ints"); }, "'t.ints'");
  expect_msg([&] { f.get_int_array("t.f32s"); }, "FLOAT32");
  expect_msg([&] { f.get_float_array("t.strs"); }, "STRING");
  expect_msg([&] { f.get_int("t.big64"); }, "does not fit");
  expect_msg([&] { f.get_int("nope"); }, "'nope' not found in g.gguf");
  expect_msg([&] { f.tensor("nope.weight"); }, "'nope.weight' not found in g.gguf");
  EXPECT_EQ(f.get_int_or("nope", 7), 7);
  EXPECT_EQ(f.get_float_or("nope", 2.5), 2.5);
  EXPECT_EQ(f.get_string_or("nope", "fb"), "fb");
  EXPECT_EQ(f.get_int_or("t.i8", 7), -100);
  EXPECT_THROW(f.get_int_or("t.str", 7), Error);  // present but wrong type is not a fallback
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  EXPECT_FALSE(f.has("nope"));
  EXPECT_TRUE(f.has("t.nested"));
}

TEST(Gguf, WriterRejectsBadInput) {
  Writer w;
  w.add_uint32("k", 1);
  EXPECT_THROW(w.add_uint32("k", 2), Error);
  EXPECT_THROW(w.set_alignment(48), Error);
  EXPECT_THROW(Value::make_int(ValueType::UINT8, 256), Error);
  EXPECT_THROW(Value::make_int(ValueType::INT16, -40000), Error);
  const uint8_t z[64] = {};
  EXPECT_THROW(w.add_tensor("a", {31}, DType::Q8_0, z, 34), Error);  // not a block multiple
  EXPECT_THROW(w.add_tensor("a", {32}, DType::Q8_0, z, 33), Error);  // wrong byte count
  EXPECT_THROW(w.add_tensor("a", {1, 1, 1, 1, 1}, DType::F32, z, 4), Error);
  w.add_tensor("a", {32}, DType::Q8_0, z, 34);
  EXPECT_THROW(w.add_tensor("a", {32}, DType::Q8_0, z, 34), Error);
}

// Every strict prefix that cuts into the header, metadata, infos or a tensor's bytes must be
// rejected; only the zero padding after the last tensor may be dropped.
TEST(GgufCorrupt, TruncationAtEveryOffset) {
  const Bytes full = make_writer().bytes();
  const File f = File::from_buffer(full);
  uint64_t data_end = 0;
  for (const TensorInfo& ti : f.tensors())
    data_end = std::max<uint64_t>(data_end, f.data_offset() + ti.offset + ti.nbytes);
  for (size_t len = 0; len < full.size(); ++len) {
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
    if (len >= data_end) {
      EXPECT_NO_THROW(File::from_buffer(cut)) << len;
      continue;
    }
    try {
      File::from_buffer(cut, "cut.gguf");
      ADD_FAILURE() << "prefix of " << len << " bytes parsed";
    } catch (const Error& e) {
      const std::string msg = e.what();
      const bool telling = msg.find("past the end") != std::string::npos ||
                           msg.find("implausible") != std::string::npos ||
                           msg.find("remain") != std::string::npos;
      EXPECT_TRUE(telling) << len << ": " << msg;
    }
  }
}

// Flip bytes everywhere before the data section: the result either parses or throws
// ic::Error (anything else, or a crash under the sanitizers, fails).
TEST(GgufCorrupt, ByteFlipsInHeaderMetadataAndInfos) {
  const Bytes full = make_writer().bytes();
  const size_t end = static_cast<size_t>(File::from_buffer(full).data_offset());
  int errors = 0, parsed = 0;
  for (size_t k = 0; k < end; ++k) {
    for (uint8_t mask : {0x01, 0x80, 0xff, 0x10}) {
      Bytes b = full;
      b[k] ^= mask;
      try {
        File::from_buffer(std::move(b));
        ++parsed;
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  // Flipping bytes of string contents or values can leave a valid file; flipping lengths,
  // counts, types or the magic cannot, so both outcomes occur.
  EXPECT_GT(errors, 0);
  EXPECT_GT(parsed, 0);
  std::mt19937 rng(5);  // and some multi-byte damage
  for (int trial = 0; trial < 3000; ++trial) {
    Bytes b = full;
    for (int j = 0; j < 4; ++j) b[rng() % end] = static_cast<uint8_t>(rng());
    try {
      File::from_buffer(std::move(b));
    } catch (const Error&) {
    }
  }
}

TEST(GgufCorrupt, HeaderFields) {
  const Bytes good = make_writer().bytes();
  Bytes b = good;
  b[0] = 'X';
  expect_error(b, "bad magic");
  expect_error(Bytes{'G', 'G', 'U'}, "past the end");
  expect_error(Bytes{}, "magic");
  b = good;
  poke<uint32_t>(b, 4, 1);
  expect_error(b, "version 1 is not supported");
  poke<uint32_t>(b, 4, 4);
  expect_error(b, "unsupported GGUF version 4");
  poke<uint32_t>(b, 4, 0x03000000);  // a big-endian v3 file
  expect_error(b, "big-endian");
  b = good;
  poke<uint64_t>(b, 8, 1ull << 60);
  expect_error(b, "tensor count 1152921504606846976 is implausible");
  b = good;
  poke<uint64_t>(b, 16, ~0ull);
  expect_error(b, "metadata count 18446744073709551615 is implausible");
  b = good;
  poke<uint64_t>(b, 16, 60);  // plausible for the size; the tensor infos are read as entries
  expect_error(b, "metadata");
}

TEST(GgufCorrupt, MetadataFields) {
  const Bytes good = make_writer().bytes();
  // The first key's length sits right after the 24-byte header.
  Bytes b = good;
  poke<uint64_t>(b, 24, 1ull << 50);
  expect_error(b, "string of 1125899906842624 bytes at offset 24 runs past the end of the file");
  // A value's type id follows its key.
  b = good;
  poke<uint32_t>(b, find_str(b, "t.u32") + 5, 99);
  expect_error(b, "metadata key 't.u32'");
  expect_error(b, "unknown value type 99");
  // A string value's length.
  b = good;
  poke<uint64_t>(b, find_str(b, "t.str") + 5 + 4, 1ull << 40);
  expect_error(b, "string of 1099511627776 bytes");
  // An array's element type and count.
  b = good;
  poke<uint32_t>(b, find_str(b, "t.ints") + 6 + 4, 13);
  expect_error(b, "unknown value type 13");
  b = good;
  poke<uint64_t>(b, find_str(b, "t.ints") + 6 + 8, 1ull << 61);
  expect_error(b, "array of 2305843009213693952 INT32 elements");
  b = good;
  poke<uint64_t>(b, find_str(b, "t.strs") + 6 + 8, ~0ull >> 1);  // strings: 8 bytes each
  expect_error(b, "STRING elements");
  // A bool that is neither 0 nor 1.
  b = good;
  poke<uint8_t>(b, find_str(b, "t.bool") + 6 + 4, 7);
  expect_error(b, "not 0 or 1");
  // Duplicate keys: rename t.u16 to t.u32's twin "t.i16".
  b = good;
  std::memcpy(b.data() + find_str(b, "t.u16"), "t.i16", 5);
  expect_error(b, "duplicate metadata key");
}

TEST(GgufCorrupt, NestedArraysTooDeep) {
  Value v = Value::make_int_array(ValueType::UINT8, {1});
  for (int d = 0; d < 40; ++d) v = Value::make_array_array({v});
  Writer w;
  w.add("deep", v);
  expect_error(w.bytes(), "nested deeper");
  Value ok = Value::make_int_array(ValueType::UINT8, {1});
  for (int d = 0; d < 8; ++d) ok = Value::make_array_array({ok});
  Writer w2;
  w2.add("deep", ok);
  EXPECT_NO_THROW(File::from_buffer(w2.bytes()));
}

TEST(GgufCorrupt, Alignment) {
  for (uint32_t bad : {0u, 3u, 48u}) {
    Writer w;
    w.add_uint32("general.alignment", 16);
    Bytes b = w.bytes();
    poke<uint32_t>(b, find_str(b, "general.alignment") + 17 + 4, bad);
    expect_error(b, "is not a power of two");
  }
  Writer w;  // the writer refuses a string alignment, so rename the key afterwards
  w.add_string("general.alignmenX", "32");
  Bytes b = w.bytes();
  b[find_str(b, "general.alignmenX") + 16] = 't';
  expect_error(b, "general.alignment has type STRING");
}

TEST(GgufCorrupt, TensorInfos) {
  const Bytes good = make_writer().bytes();
  const InfoPos q8 = tensor_info_pos(good, "tensor_q8", 2);
  const InfoPos q4k = tensor_info_pos(good, "tensor_q4k", 4);
  Bytes b = good;
  poke<uint32_t>(b, q8.type, 13);
  expect_error(b, "tensor 'tensor_q8'");
  expect_error(b, "Q5_K (13)");
  poke<uint32_t>(b, q8.type, 77);
  expect_error(b, "unknown ggml type id 77");
  b = good;
  poke<uint32_t>(b, q8.n_dims, 5);
  expect_error(b, "rank 5");
  poke<uint32_t>(b, q8.n_dims, 0);
  expect_error(b, "rank 0");
  b = good;
  poke<uint64_t>(b, q8.ne0 + 8, 0);
  expect_error(b, "ne[1] = 0 must be positive");
  b = good;
  poke<uint64_t>(b, q8.ne0, 33);
  expect_error(b, "not a multiple of the Q8_0 block size 32");
  b = good;  // 2^32 * 2^32 elements overflow in the 4-d tensor
  for (int d = 1; d < 4; ++d) poke<uint64_t>(b, q4k.ne0 + 8 * d, 1ull << 32);
  expect_error(b, "overflows");
  b = good;  // huge but not overflowing: the byte range check catches it
  poke<uint64_t>(b, q4k.ne0 + 8, 1ull << 20);
  expect_error(b, "runs past the end of the file");
  b = good;
  poke<uint64_t>(b, q8.offset, 1ull << 30);
  expect_error(b, "tensor 'tensor_q8' data [1073741824, 1073741892)");
  b = good;
  poke<uint64_t>(b, q8.offset, ~0ull - 31);  // aligned, and offset + nbytes wraps around
  expect_error(b, "runs past the end of the file");
  b = good;
  uint64_t off;
  std::memcpy(&off, b.data() + q8.offset, 8);
  poke<uint64_t>(b, q8.offset, off + 4);
  expect_error(b, "is not a multiple of the alignment 32");
  b = good;  // rename tensor_q4k's name to collide with "tensor_q8" is not possible (lengths
             // differ); make two same-length names collide instead.
  std::memcpy(b.data() + find_str(b, "tensor_f32"), "tensor_q4k", 10);
  expect_error(b, "duplicate tensor name");
  // A file cut right after the infos: the data section starts past the end.
  const File f = File::from_buffer(good);
  const Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(f.data_offset()) - 1);
  expect_error(cut, "data section starts at offset");
}

TEST(GgufModel, ReadsSmolLM2) {
  IC_TEST_MODEL_OR_SKIP(path);
  const File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 33u);  // as counted by the gguf Python package
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.get_int("llama.feed_forward_length"), 1536);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_DOUBLE_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  const TensorInfo& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, DType::Q8_0);
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(emb.shape(), (Shape{49152, 576}));
  const TensorInfo& q = f.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, DType::Q4_1);
  EXPECT_EQ(q.shape(), (Shape{576, 576}));
  const Tensor t = f.tensor_view(q);
  EXPECT_EQ(t.nbytes(), q.nbytes);
  EXPECT_EQ(t.raw(), static_cast<const void*>(q.data));
  EXPECT_THROW(f.tensor("no.such.tensor"), Error);
  EXPECT_THROW(f.get_int("general.architecture"), Error);
}

}  // namespace
}  // namespace ic::gguf
