#pragma once
// A Tensor is a typed, shaped view of memory on one device, row-major with the last
// dimension contiguous. Storage is shared (copies are cheap views); a view may also borrow
// memory it does not own, such as a memory-mapped GGUF file.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/dtype.h"

namespace ic {

class Storage {
 public:
  // Owning allocation, 64-byte aligned on the CPU; cudaMalloc on the GPU.
  Storage(int64_t bytes, Device device);
  // Borrowed memory: `keep_alive` holds whatever owns it (may be null).
  Storage(void* data, int64_t bytes, Device device, std::shared_ptr<void> keep_alive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  Device device_ = Device::CPU;
  bool owned_ = false;
  std::shared_ptr<void> keep_alive_;
};

constexpr int kMaxRank = 4;

struct Shape {
  std::array<int64_t, kMaxRank> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  int64_t operator[](int i) const { return dims[i < 0 ? rank + i : i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::string str() const;  // "[2, 3]"
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::CPU);
  // Borrow memory that outlives the tensor or is kept alive by `keep_alive`.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device = Device::CPU,
                       std::shared_ptr<void> keep_alive = nullptr);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int rank() const { return shape_.rank; }
  int64_t numel() const { return shape_.numel(); }
  int64_t nbytes() const;
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::CPU; }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same bytes, new shape with the same element count.
  Tensor reshape(const Shape& shape) const;
  // Deep copy to `device` (same device: a fresh copy).
  Tensor to(Device device) const;
  void copy_from(const Tensor& src);

  std::string desc() const;  // "F32[2, 3] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

// Shape and type checks with messages that name the argument: check_tensor(x, "x", ...).
void check_tensor(const Tensor& t, const char* name, DType dtype, Device device, int rank);
void check_same_device(const Tensor& a, const Tensor& b, const char* what);

}  // namespace ic
