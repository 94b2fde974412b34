#pragma once
// GGUF reader: memory-maps a file read-only, parses and validates the header, metadata
// and tensor infos, and hands out borrowed tensors over the mapped bytes. Every malformed
// or truncated input is an ic::Error that says what is wrong and at which byte offset.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace ic::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY,
  UINT64, INT64, FLOAT64
};

// "UINT32", "ARRAY", ... or "unknown" for ids outside the enum.
std::string_view value_type_name(ValueType t);
bool value_type_is_integer(ValueType t);  // the eight integer types (not BOOL)
bool value_type_is_float(ValueType t);    // FLOAT32, FLOAT64

// A metadata value: a scalar, a string, or an array with one element type. Arrays keep
// their elements in the member that matches the element type, so a 50k-entry vocabulary
// costs one std::string per entry and not one Value per entry.
struct Value {
  ValueType type = ValueType::UINT8;
  ValueType elem_type = ValueType::UINT8;  // ARRAY only: the element type

  // Scalars. Integers and BOOL are in `i`; a UINT64 is stored as its bit pattern, so
  // values above INT64_MAX read back negative here (the getters reject them).
  int64_t i = 0;
  double f = 0.0;     // FLOAT32 / FLOAT64 (a FLOAT32 is exact in a double)
  std::string s;      // STRING

  // Arrays: exactly one of these is used, chosen by elem_type.
  std::vector<int64_t> ints;         // integer and BOOL elements (UINT64 as bit patterns)
  std::vector<double> floats;        // FLOAT32 / FLOAT64 elements
  std::vector<std::string> strings;  // STRING elements
  std::vector<Value> arrays;         // ARRAY elements (nested arrays)

  int64_t size() const;  // element count of an array, 1 for a scalar or string
  // Short human-readable form for listings: 42, 1.5, "text", [1, 2, 3, ... (49152)].
  std::string str(int64_t max_elems = 8) const;

  // Builders, mostly for the writer and tests. make_int checks that the value fits `type`.
  static Value make_int(ValueType type, int64_t v);
  static Value make_uint64(uint64_t v);
  static Value make_float(ValueType type, double v);
  static Value make_bool(bool v);
  static Value make_string(std::string v);
  static Value make_int_array(ValueType elem, std::vector<int64_t> v);
  static Value make_bool_array(std::vector<bool> v);
  static Value make_float_array(ValueType elem, std::vector<double> v);
  static Value make_string_array(std::vector<std::string> v);
  static Value make_array_array(std::vector<Value> v);  // every element must be an ARRAY
};

struct KeyValue {
  std::string key;
  Value value;
};

// ggml type ids as they appear in a GGUF file.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30
};
// The ggml name of a type id ("Q5_K"), or empty for ids ggml does not define.
std::string_view ggml_type_name(uint32_t id);
// ic::DType for a ggml type id, or nullopt for types indexcache does not read.
std::optional<DType> dtype_from_ggml(uint32_t id);
// ggml type id of a DType; throws for types that have no GGUF form (I32, F8_E4M3).
uint32_t ggml_from_dtype(DType t);

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the innermost (contiguous) dimension
  DType type = DType::F32;
  uint64_t offset = 0;      // from the start of the data section
  int64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping (valid while the File lives)

  int64_t numel() const;
  Shape shape() const;  // row-major ic::Shape: {ne[n-1], ..., ne[0]}
};

class File {
 public:
  // mmap + parse + validate; throws ic::Error naming the file.
  static File open(const std::string& path);
  // Parse an in-memory image (tests, the fuzzer, the writer's round trip).
  static File from_buffer(std::vector<uint8_t> bytes, std::string name = "<memory>");

  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() = default;

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section
  int64_t file_size() const { return static_cast<int64_t>(size_); }

  const std::vector<KeyValue>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;  // null if absent
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters: throw ic::Error naming the key if it is missing or of an incompatible type.
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;    // any integer type (and bool)
  double get_float(std::string_view key) const;   // FLOAT32/FLOAT64 or any integer
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;
  int64_t get_int_or(std::string_view key, int64_t fallback) const;
  double get_float_or(std::string_view key, double fallback) const;
  std::string get_string_or(std::string_view key, std::string fallback) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;  // null if absent
  const TensorInfo& tensor(std::string_view name) const;       // throws naming tensor and file

  // A borrowed ic::Tensor over the mapped bytes that keeps the mapping alive.
  Tensor tensor_view(const TensorInfo& info) const;

 private:
  File() = default;
  void parse();
  const Value& require(std::string_view key) const;

  std::string path_;
  std::shared_ptr<const void> owner_;  // the mapping or the owned buffer
  const uint8_t* base_ = nullptr;       // [size_] bytes of the whole file
  size_t size_ = 0;

  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;  // key -> index into kv_
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;  // name -> index into tensors_
};

}  // namespace ic::gguf
