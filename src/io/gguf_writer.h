#pragma once
// A small GGUF (v3 by default) writer: metadata of every value type and tensors of any
// supported dtype from raw bytes. Tests build files with it, and tools use it for tiny random
// models. Everything is held in memory until bytes()/write().
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "io/gguf.h"

namespace ic::gguf {

class Writer {
 public:
  explicit Writer(uint32_t version = 3);

  // Power of two. Written as general.alignment (UINT32) when it differs from GGUF's default 32.
  void set_alignment(uint64_t alignment);
  uint64_t alignment() const { return alignment_; }

  // Metadata in insertion order; a duplicate key throws. Adding "general.alignment" here
  // also sets the alignment (it must then be a power-of-two integer).
  void add(std::string key, Value value);
  void add_string(std::string key, std::string v) { add(std::move(key), Value::make_string(std::move(v))); }
  void add_uint32(std::string key, uint32_t v) { add(std::move(key), Value::make_int(ValueType::UINT32, v)); }
  void add_int32(std::string key, int32_t v) { add(std::move(key), Value::make_int(ValueType::INT32, v)); }
  void add_uint64(std::string key, uint64_t v) { add(std::move(key), Value::make_uint64(v)); }
  void add_int64(std::string key, int64_t v) { add(std::move(key), Value::make_int(ValueType::INT64, v)); }
  void add_float32(std::string key, float v) { add(std::move(key), Value::make_float(ValueType::FLOAT32, v)); }
  void add_float64(std::string key, double v) { add(std::move(key), Value::make_float(ValueType::FLOAT64, v)); }
  void add_bool(std::string key, bool v) { add(std::move(key), Value::make_bool(v)); }
  void add_string_array(std::string key, std::vector<std::string> v) {
    add(std::move(key), Value::make_string_array(std::move(v)));
  }

  // A tensor from raw bytes in ggml layout. ne is GGUF order (ne[0] innermost); nbytes must
  // equal the size implied by ne and type.
  void add_tensor(std::string name, std::vector<int64_t> ne, DType type, const void* data,
                  int64_t nbytes);
  // A CPU tensor; its row-major shape becomes ne reversed.
  void add_tensor(std::string name, const Tensor& t);

  std::vector<uint8_t> bytes() const;
  void write(const std::string& path) const;  // throws ic::Error naming the path on I/O errors

 private:
  struct PendingTensor {
    std::string name;
    std::vector<int64_t> ne;  // GGUF order
    DType type;
    std::vector<uint8_t> data;  // [nbytes]
  };
  uint32_t version_;
  uint64_t alignment_ = 32;
  bool alignment_in_kv_ = false;  // the caller added general.alignment itself
  std::vector<KeyValue> kv_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace ic::gguf
