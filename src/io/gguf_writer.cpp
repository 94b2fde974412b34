#include "io/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace ic::gguf {
namespace {

class Out {
 public:
  explicit Out(std::vector<uint8_t>& b) : b_(b) {}
  template <typename T>
  void put(T v) {
    const size_t at = b_.size();
    b_.resize(at + sizeof(T));
    std::memcpy(b_.data() + at, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void pad_to(uint64_t alignment) {
    while (b_.size() % alignment) b_.push_back(0);
  }

 private:
  std::vector<uint8_t>& b_;
};

void put_int(Out& o, ValueType t, int64_t v) {
  switch (t) {
    case ValueType::UINT8: o.put<uint8_t>(static_cast<uint8_t>(v)); break;
    case ValueType::INT8: o.put<int8_t>(static_cast<int8_t>(v)); break;
    case ValueType::UINT16: o.put<uint16_t>(static_cast<uint16_t>(v)); break;
    case ValueType::INT16: o.put<int16_t>(static_cast<int16_t>(v)); break;
    case ValueType::UINT32: o.put<uint32_t>(static_cast<uint32_t>(v)); break;
    case ValueType::INT32: o.put<int32_t>(static_cast<int32_t>(v)); break;
    case ValueType::UINT64: o.put<uint64_t>(static_cast<uint64_t>(v)); break;
    case ValueType::INT64: o.put<int64_t>(v); break;
    case ValueType::BOOL: o.put<uint8_t>(v ? 1 : 0); break;
    default: IC_ASSERT(false);
  }
}

void put_float(Out& o, ValueType t, double v) {
  if (t == ValueType::FLOAT32) o.put<float>(static_cast<float>(v));
  else o.put<double>(v);
}

// The value body (no type id); arrays write their element type and count first.
void put_value(Out& o, const Value& v) {
  if (v.type == ValueType::STRING) return o.put_string(v.s);
  if (value_type_is_float(v.type)) return put_float(o, v.type, v.f);
  if (v.type != ValueType::ARRAY) return put_int(o, v.type, v.i);
  o.put<uint32_t>(static_cast<uint32_t>(v.elem_type));
  o.put<uint64_t>(static_cast<uint64_t>(v.size()));
  if (v.elem_type == ValueType::STRING) {
    for (const std::string& s : v.strings) o.put_string(s);
  } else if (v.elem_type == ValueType::ARRAY) {
    for (const Value& a : v.arrays) put_value(o, a);
  } else if (value_type_is_float(v.elem_type)) {
    for (double x : v.floats) put_float(o, v.elem_type, x);
  } else {
    for (int64_t x : v.ints) put_int(o, v.elem_type, x);
  }
}

}  // namespace

Writer::Writer(uint32_t version) : version_(version) {}

void Writer::set_alignment(uint64_t alignment) {
  IC_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0 && alignment <= UINT32_MAX,
           "gguf writer: alignment {} is not a power of two that fits in UINT32", alignment);
  IC_CHECK(!alignment_in_kv_, "gguf writer: general.alignment was already added as metadata");
  alignment_ = alignment;
}

void Writer::add(std::string key, Value value) {
  for (const KeyValue& kv : kv_)
    IC_CHECK(kv.key != key, "gguf writer: duplicate metadata key '{}'", key);
  if (key == "general.alignment") {
    IC_CHECK(value_type_is_integer(value.type), "gguf writer: general.alignment must be an integer");
    set_alignment(static_cast<uint64_t>(value.i));
    alignment_in_kv_ = true;
  }
  kv_.push_back({std::move(key), std::move(value)});
}

void Writer::add_tensor(std::string name, std::vector<int64_t> ne, DType type, const void* data,
                        int64_t nbytes) {
  for (const PendingTensor& t : tensors_)
    IC_CHECK(t.name != name, "gguf writer: duplicate tensor '{}'", name);
  IC_CHECK(!ne.empty() && ne.size() <= 4, "gguf writer: tensor '{}' has rank {}, expected 1..4",
           name, ne.size());
  ggml_from_dtype(type);  // throws for dtypes without a GGUF form
  int64_t numel = 1;
  for (int64_t d : ne) {
    IC_CHECK(d > 0, "gguf writer: tensor '{}' has a dimension {}", name, d);
    numel *= d;
  }
  IC_CHECK(ne[0] % dtype_block_size(type) == 0,
           "gguf writer: tensor '{}' row of {} is not a multiple of the {} block size", name,
           ne[0], dtype_name(type));
  const int64_t expected = dtype_row_bytes(type, numel);
  IC_CHECK(nbytes == expected, "gguf writer: tensor '{}' has {} bytes, its shape and {} need {}",
           name, nbytes, dtype_name(type), expected);
  const auto* p = static_cast<const uint8_t*>(data);
  tensors_.push_back({std::move(name), std::move(ne), type, std::vector<uint8_t>(p, p + nbytes)});
}

void Writer::add_tensor(std::string name, const Tensor& t) {
  IC_CHECK(t.device() == Device::CPU, "gguf writer: tensor '{}' is not on the CPU", name);
  std::vector<int64_t> ne;
  for (int k = t.rank() - 1; k >= 0; --k) ne.push_back(t.dim(k));
  add_tensor(std::move(name), std::move(ne), t.dtype(), t.raw(), t.nbytes());
}

std::vector<uint8_t> Writer::bytes() const {
  std::vector<uint8_t> b;
  Out o(b);
  o.put<uint32_t>(0x46554747u);  // "GGUF" read as a little-endian u32
  o.put<uint32_t>(version_);
  o.put<uint64_t>(tensors_.size());
  const bool implicit_alignment = alignment_ != 32 && !alignment_in_kv_;
  o.put<uint64_t>(kv_.size() + (implicit_alignment ? 1 : 0));
  if (implicit_alignment) {
    o.put_string("general.alignment");
    o.put<uint32_t>(static_cast<uint32_t>(ValueType::UINT32));
    o.put<uint32_t>(static_cast<uint32_t>(alignment_));
  }
  for (const KeyValue& kv : kv_) {
    o.put_string(kv.key);
    o.put<uint32_t>(static_cast<uint32_t>(kv.value.type));
    put_value(o, kv.value);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    o.put_string(t.name);
    o.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) o.put<uint64_t>(static_cast<uint64_t>(d));
    o.put<uint32_t>(ggml_from_dtype(t.type));
    o.put<uint64_t>(offset);
    offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  o.pad_to(alignment_);
  for (const PendingTensor& t : tensors_) {
    b.insert(b.end(), t.data.begin(), t.data.end());
    o.pad_to(alignment_);
  }
  return b;
}

void Writer::write(const std::string& path) const {
  const std::vector<uint8_t> b = bytes();
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  IC_CHECK(f != nullptr, "gguf writer: cannot create {}: {}", path, std::strerror(errno));
  IC_CHECK(std::fwrite(b.data(), 1, b.size(), f.get()) == b.size(),
           "gguf writer: short write to {}: {}", path, std::strerror(errno));
  IC_CHECK(std::fclose(f.release()) == 0, "gguf writer: cannot close {}: {}", path,
           std::strerror(errno));
}

}  // namespace ic::gguf
