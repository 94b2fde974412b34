// GGUF parsing and validation. Layout (little-endian, versions 2 and 3):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x (string key, u32 value type, value),
//   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset),
//   padding to general.alignment, data section (tensor offsets are relative to its start).
// A string is a u64 byte count followed by the bytes; an array is u32 element type, u64
// count, elements. Every count is checked against the bytes that remain before anything is
// allocated, so a hostile header cannot ask for gigabytes.
#include "io/gguf.h"


#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/mapped_file.h"

namespace ic::gguf {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxRankGguf = 4;
// Nested arrays recurse; bound the depth so a file of nested headers cannot exhaust the
// stack. Real files nest at most once (none of the known keys nests at all).
constexpr int kMaxArrayDepth = 32;

// Bounds-checked little-endian cursor over the whole file image.
class Reader {
 public:
  Reader(const uint8_t* base, size_t size) : base_(base), size_(size) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  size_t size() const { return size_; }

  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail("{} ({} bytes) at offset {} runs past the end of the file (size {})", what, n, pos_,
           size_);
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    const size_t at = pos_;
    const uint64_t n = read<uint64_t>(what);
    if (n > left())
      fail("{}: string of {} bytes at offset {} runs past the end of the file (size {})", what,
           n, at, size_);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
};

ValueType read_value_type(Reader& r, const char* what) {
  const size_t at = r.pos();
  const uint32_t id = r.read<uint32_t>(what);
  if (id > static_cast<uint32_t>(ValueType::FLOAT64))
    fail("unknown value type {} at offset {} (valid types are 0..12)", id, at);
  return static_cast<ValueType>(id);
}

// Fewest bytes one element of type t occupies in the file (strings and arrays: their header).
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL: return 1;
    case ValueType::UINT16:
    case ValueType::INT16: return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32: return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

int64_t read_int(Reader& r, ValueType t) {
  switch (t) {
    case ValueType::UINT8: return r.read<uint8_t>("UINT8 value");
    case ValueType::INT8: return r.read<int8_t>("INT8 value");
    case ValueType::UINT16: return r.read<uint16_t>("UINT16 value");
    case ValueType::INT16: return r.read<int16_t>("INT16 value");
    case ValueType::UINT32: return r.read<uint32_t>("UINT32 value");
    case ValueType::INT32: return r.read<int32_t>("INT32 value");
    case ValueType::UINT64: return static_cast<int64_t>(r.read<uint64_t>("UINT64 value"));
    case ValueType::INT64: return r.read<int64_t>("INT64 value");
    case ValueType::BOOL: {
      const size_t at = r.pos();
      const uint8_t b = r.read<uint8_t>("BOOL value");
      IC_CHECK(b <= 1, "BOOL value at offset {} is {}, not 0 or 1", at, b);
      return b;
    }
    default: IC_ASSERT(false);
  }
}

double read_float(Reader& r, ValueType t) {
  if (t == ValueType::FLOAT32) return r.read<float>("FLOAT32 value");
  return r.read<double>("FLOAT64 value");
}

Value read_value(Reader& r, ValueType t, int depth);

Value read_array(Reader& r, int depth) {
  IC_CHECK(depth < kMaxArrayDepth, "arrays nested deeper than {} levels at offset {}",
           kMaxArrayDepth, r.pos());
  Value v;
  v.type = ValueType::ARRAY;
  v.elem_type = read_value_type(r, "array element type");
  const size_t at = r.pos();
  const uint64_t n = r.read<uint64_t>("array length");
  const uint64_t min_bytes = min_encoded_size(v.elem_type);
  if (n > r.left() / min_bytes)
    fail("array of {} {} elements at offset {} needs at least {} bytes per element but only {} "
         "bytes remain in the file (size {})",
         n, value_type_name(v.elem_type), at, min_bytes, r.left(), r.size());
  const size_t count = static_cast<size_t>(n);
  if (v.elem_type == ValueType::STRING) {
    v.strings.reserve(count);
    for (size_t k = 0; k < count; ++k) v.strings.push_back(r.read_string("array string"));
  } else if (v.elem_type == ValueType::ARRAY) {
    v.arrays.reserve(count);
    for (size_t k = 0; k < count; ++k) v.arrays.push_back(read_array(r, depth + 1));
  } else if (value_type_is_float(v.elem_type)) {
    v.floats.reserve(count);
    for (size_t k = 0; k < count; ++k) v.floats.push_back(read_float(r, v.elem_type));
  } else {
    v.ints.reserve(count);
    for (size_t k = 0; k < count; ++k) v.ints.push_back(read_int(r, v.elem_type));
  }
  return v;
}

Value read_value(Reader& r, ValueType t, int depth) {
  if (t == ValueType::ARRAY) return read_array(r, depth);
  Value v;
  v.type = t;
  if (t == ValueType::STRING) v.s = r.read_string("string value");
  else if (value_type_is_float(t)) v.f = read_float(r, t);
  else v.i = read_int(r, t);
  return v;
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

std::string describe_ggml_type(uint32_t id) {
  const std::string_view name = ggml_type_name(id);
  if (name.empty()) return fmt::format("unknown ggml type id {}", id);
  return fmt::format("{} ({})", name, id);
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

Shape TensorInfo::shape() const {
  Shape s;
  s.rank = static_cast<int>(ne.size());
  for (int k = 0; k < s.rank; ++k) s.dims[k] = ne[ne.size() - 1 - k];
  return s;
}

File File::open(const std::string& path) {
  MappedBytes m = MappedBytes::map(path, "GGUF");
  File f;
  f.path_ = path;
  f.base_ = m.data;
  f.size_ = m.size;
  f.owner_ = std::move(m.owner);
  f.parse();
  return f;
}

File File::from_buffer(std::vector<uint8_t> bytes, std::string name) {
  MappedBytes m = MappedBytes::own(std::move(bytes));
  File f;
  f.path_ = std::move(name);
  f.base_ = m.data;
  f.size_ = m.size;
  f.owner_ = std::move(m.owner);
  f.parse();
  return f;
}

void File::parse() {
  Reader r(base_, size_);
  size_t section_start = 0;
  alignment_ = kDefaultAlignment;
  try {
    // Header.
    const char magic_expected[4] = {'G', 'G', 'U', 'F'};
    r.need(4, "magic");
    if (std::memcmp(base_, magic_expected, 4) != 0)
      fail("bad magic {:02x} {:02x} {:02x} {:02x} (expected \"GGUF\"): not a GGUF file",
           base_[0], base_[1], base_[2], base_[3]);
    r.read<uint32_t>("magic");
    version_ = r.read<uint32_t>("version");
    if (version_ == 1) fail("GGUF version 1 is not supported (only versions 2 and 3)");
    IC_CHECK(version_ == 2 || version_ == 3,
             "unsupported GGUF version {} (only versions 2 and 3; a byte-swapped value means a "
             "big-endian file)", version_);
    const uint64_t n_tensors = r.read<uint64_t>("tensor count");
    const uint64_t n_kv = r.read<uint64_t>("metadata count");
    // Each metadata entry is at least a key length (8), a type (4) and one byte; each tensor
    // info at least a name length (8), n_dims (4), one dim (8), a type (4) and an offset (8).
    IC_CHECK(n_kv <= r.left() / 13,
             "metadata count {} is implausible: {} entries need at least {} bytes per entry but "
             "the file has {} bytes after the header", n_kv, n_kv, 13, r.left());
    IC_CHECK(n_tensors <= r.left() / 32,
             "tensor count {} is implausible: the file has only {} bytes after the header",
             n_tensors, r.left());

    // Metadata.
    kv_.reserve(static_cast<size_t>(n_kv));
    for (uint64_t k = 0; k < n_kv; ++k) {
      section_start = r.pos();
      std::string key;
      try {
        key = r.read_string("metadata key");
        Value v = read_value(r, read_value_type(r, "value type"), 0);
        if (key == "general.alignment") {
          IC_CHECK(value_type_is_integer(v.type), "general.alignment has type {}, expected UINT32",
                   value_type_name(v.type));
          IC_CHECK(v.i > 0 && is_power_of_two(static_cast<uint64_t>(v.i)),
                   "general.alignment = {} is not a power of two", v.i);
          alignment_ = static_cast<uint64_t>(v.i);
        }
        auto [it, inserted] = kv_index_.emplace(key, kv_.size());
        IC_CHECK(inserted, "duplicate metadata key (first seen as entry {})", it->second);
        kv_.push_back({std::move(key), std::move(v)});
      } catch (const Error& e) {
        if (key.empty())
          fail("metadata entry {} of {} at offset {}: {}", k, n_kv, section_start, e.what());
        fail("metadata key '{}' (entry {} of {}, at offset {}): {}", key, k, n_kv, section_start,
             e.what());
      }
    }

    // Tensor infos.
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
      section_start = r.pos();
      TensorInfo ti;
      try {
        ti.name = r.read_string("tensor name");
        const size_t dims_at = r.pos();
        const uint32_t n_dims = r.read<uint32_t>("tensor rank");
        IC_CHECK(n_dims >= 1 && n_dims <= kMaxRankGguf, "rank {} at offset {} is not in 1..{}",
                 n_dims, dims_at, kMaxRankGguf);
        int64_t numel = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
          const uint64_t n = r.read<uint64_t>("tensor dimension");
          IC_CHECK(n >= 1 && n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                   "dimension ne[{}] = {} must be positive", d, n);
          const int64_t ne = static_cast<int64_t>(n);
          IC_CHECK(numel <= std::numeric_limits<int64_t>::max() / ne,
                   "element count overflows int64 at ne[{}] = {}", d, ne);
          numel *= ne;
          ti.ne.push_back(ne);
        }
        const uint32_t type_id = r.read<uint32_t>("tensor type");
        const std::optional<DType> dt = dtype_from_ggml(type_id);
        IC_CHECK(dt.has_value(), "tensor type {} is not supported (indexcache reads F32, F16, "
                 "BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K)", describe_ggml_type(type_id));
        ti.type = *dt;
        const int64_t bs = dtype_block_size(ti.type);
        IC_CHECK(ti.ne[0] % bs == 0,
                 "row length ne[0] = {} is not a multiple of the {} block size {} ({} elements)",
                 ti.ne[0], dtype_name(ti.type), bs, numel);
        const int64_t blocks = numel / bs;
        const int64_t block_bytes = dtype_block_bytes(ti.type);
        IC_CHECK(blocks <= std::numeric_limits<int64_t>::max() / block_bytes,
                 "byte size of {} {} elements overflows int64", numel, dtype_name(ti.type));
        ti.nbytes = blocks * block_bytes;
        ti.offset = r.read<uint64_t>("tensor offset");
        IC_CHECK(ti.offset % alignment_ == 0, "data offset {} is not a multiple of the alignment {}",
                 ti.offset, alignment_);
        auto [it, inserted] = tensor_index_.emplace(ti.name, tensors_.size());
        IC_CHECK(inserted, "duplicate tensor name (first seen as tensor {})", it->second);
        tensors_.push_back(std::move(ti));
      } catch (const Error& e) {
        if (ti.name.empty())
          fail("tensor info {} of {} at offset {}: {}", k, n_tensors, section_start, e.what());
        fail("tensor '{}' (info {} of {}, at offset {}): {}", ti.name, k, n_tensors,
             section_start, e.what());
      }
    }

    // Data section: starts at the next multiple of the alignment after the infos.
    const uint64_t end_of_infos = r.pos();
    data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
    if (!tensors_.empty())
      IC_CHECK(data_offset_ <= size_,
               "data section starts at offset {} (infos end at {}, alignment {}), past the end of "
               "the file (size {})", data_offset_, end_of_infos, alignment_, size_);
    const uint64_t data_bytes = tensors_.empty() ? 0 : size_ - data_offset_;
    for (TensorInfo& ti : tensors_) {
      const uint64_t nbytes = static_cast<uint64_t>(ti.nbytes);
      IC_CHECK(ti.offset <= data_bytes && nbytes <= data_bytes - ti.offset,
               "tensor '{}' data [{}, {}) relative to the data section at {} runs past the end of "
               "the file (size {}, {} data bytes)", ti.name, ti.offset, ti.offset + nbytes,
               data_offset_, size_, data_bytes);
      ti.data = base_ + data_offset_ + ti.offset;
    }
  } catch (const Error& e) {
    fail("GGUF {}: {}", path_, e.what());
  }
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

const Value& File::require(std::string_view key) const {
  const Value* v = find(key);
  IC_CHECK(v != nullptr, "metadata key '{}' not found in {}", key, path_);
  return *v;
}

namespace {

[[noreturn]] void wrong_type(std::string_view key, const std::string& path, const Value& v,
                             const char* expected) {
  if (v.type == ValueType::ARRAY)
    fail("metadata key '{}' in {} is an ARRAY of {}, expected {}", key, path,
         value_type_name(v.elem_type), expected);
  fail("metadata key '{}' in {} is {}, expected {}", key, path, value_type_name(v.type), expected);
}

bool is_int_like(ValueType t) { return value_type_is_integer(t) || t == ValueType::BOOL; }

int64_t checked_int(std::string_view key, const std::string& path, ValueType t, int64_t v) {
  IC_CHECK(t != ValueType::UINT64 || v >= 0,
           "metadata key '{}' in {}: UINT64 value {} does not fit in int64", key, path,
           static_cast<uint64_t>(v));
  return v;
}

}  // namespace

std::string File::get_string(std::string_view key) const {
  const Value& v = require(key);
  if (v.type != ValueType::STRING) wrong_type(key, path_, v, "STRING");
  return v.s;
}

int64_t File::get_int(std::string_view key) const {
  const Value& v = require(key);
  if (!is_int_like(v.type)) wrong_type(key, path_, v, "an integer");
  return checked_int(key, path_, v.type, v.i);
}

double File::get_float(std::string_view key) const {
  const Value& v = require(key);
  if (value_type_is_float(v.type)) return v.f;
  if (value_type_is_integer(v.type))
    return v.type == ValueType::UINT64 ? static_cast<double>(static_cast<uint64_t>(v.i))
                                       : static_cast<double>(v.i);
  wrong_type(key, path_, v, "a number");
}

bool File::get_bool(std::string_view key) const {
  const Value& v = require(key);
  if (v.type != ValueType::BOOL) wrong_type(key, path_, v, "BOOL");
  return v.i != 0;
}

std::vector<std::string> File::get_string_array(std::string_view key) const {
  const Value& v = require(key);
  if (v.type != ValueType::ARRAY || v.elem_type != ValueType::STRING)
    wrong_type(key, path_, v, "an ARRAY of STRING");
  return v.strings;
}

std::vector<int64_t> File::get_int_array(std::string_view key) const {
  const Value& v = require(key);
  if (v.type != ValueType::ARRAY || !is_int_like(v.elem_type))
    wrong_type(key, path_, v, "an ARRAY of integers");
  for (int64_t x : v.ints) checked_int(key, path_, v.elem_type, x);
  return v.ints;
}

std::vector<double> File::get_float_array(std::string_view key) const {
  const Value& v = require(key);
  if (v.type != ValueType::ARRAY) wrong_type(key, path_, v, "an ARRAY of numbers");
  if (value_type_is_float(v.elem_type)) return v.floats;
  if (!value_type_is_integer(v.elem_type)) wrong_type(key, path_, v, "an ARRAY of numbers");
  std::vector<double> out;
  out.reserve(v.ints.size());
  for (int64_t x : v.ints)
    out.push_back(v.elem_type == ValueType::UINT64 ? static_cast<double>(static_cast<uint64_t>(x))
                                                    : static_cast<double>(x));
  return out;
}

int64_t File::get_int_or(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double File::get_float_or(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

std::string File::get_string_or(std::string_view key, std::string fallback) const {
  return has(key) ? get_string(key) : std::move(fallback);
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  IC_CHECK(t != nullptr, "tensor '{}' not found in {} ({} tensors)", name, path_,
           tensors_.size());
  return *t;
}

Tensor File::tensor_view(const TensorInfo& info) const {
  IC_ASSERT(info.data >= base_ && info.data + info.nbytes <= base_ + size_);
  // The mapping is read-only: callers must treat the view as const (ic::Tensor has no
  // const-element flavour, so the cast happens here, once).
  return Tensor::borrow(const_cast<uint8_t*>(info.data), info.shape(), info.type, Device::CPU,
                        std::const_pointer_cast<void>(owner_));
}

}  // namespace ic::gguf
