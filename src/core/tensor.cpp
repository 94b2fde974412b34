#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/cuda_memory.h"
#include "core/error.h"

namespace ic {

Storage::Storage(int64_t bytes, Device device) : bytes_(bytes), device_(device), owned_(true) {
  IC_CHECK(bytes >= 0, "negative allocation of {} bytes", bytes);
  if (device == Device::CPU) {
    const size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
    data_ = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    IC_CHECK(data_ || rounded == 0, "out of host memory allocating {:.1f} MiB", bytes / 1048576.0);
  } else {
    data_ = cuda::alloc(bytes);
  }
}

Storage::Storage(void* data, int64_t bytes, Device device, std::shared_ptr<void> keep_alive)
    : data_(data), bytes_(bytes), device_(device), owned_(false), keep_alive_(std::move(keep_alive)) {}

Storage::~Storage() {
  if (!owned_) return;
  if (device_ == Device::CPU) std::free(data_);
  else cuda::free(data_);
}

Shape::Shape(std::initializer_list<int64_t> d) {
  IC_CHECK(d.size() <= kMaxRank, "rank {} exceeds the maximum {}", d.size(), kMaxRank);
  for (int64_t v : d) dims[rank++] = v;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

int64_t Tensor::nbytes() const {
  const int64_t n = numel();
  return n / dtype_block_size(dtype_) * dtype_block_bytes(dtype_);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int i = 0; i < shape.rank; ++i)
    IC_CHECK(shape.dims[i] >= 0, "negative dimension in shape {}", shape.str());
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  IC_CHECK(shape.numel() % dtype_block_size(dtype) == 0, "{} elements do not fill {} blocks",
           shape.numel(), dtype_name(dtype));
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device == Device::CPU) std::memset(t.raw(), 0, static_cast<size_t>(t.nbytes()));
  else cuda::memset_zero(t.raw(), t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device,
                      std::shared_ptr<void> keep_alive) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(data, t.nbytes(), device, std::move(keep_alive));
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  IC_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= dim(0),
           "row slice [{}, {}) out of range for {}", begin, end, desc());
  Tensor t = *this;
  const int64_t row_elems = numel() / (dim(0) ? dim(0) : 1);
  t.offset_ += begin * row_elems / dtype_block_size(dtype_) * dtype_block_bytes(dtype_);
  t.shape_.dims[0] = end - begin;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  IC_CHECK(shape.numel() == numel(), "cannot reshape {} to {}", desc(), shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  IC_CHECK(src.shape() == shape_ && src.dtype() == dtype_, "copy from {} into {}", src.desc(),
           desc());
  if (device() == Device::CPU && src.device() == Device::CPU)
    std::memcpy(raw(), src.raw(), static_cast<size_t>(nbytes()));
  else
    cuda::copy(raw(), device(), src.raw(), src.device(), nbytes());
}

std::string Tensor::desc() const {
  return std::string(dtype_name(dtype_)) + shape_.str() + " on " + std::string(device_name(device()));
}

void check_tensor(const Tensor& t, const char* name, DType dtype, Device device, int rank) {
  IC_CHECK(t.defined(), "{}: tensor is empty", name);
  IC_CHECK(t.dtype() == dtype, "{}: expected {} but got {}", name, dtype_name(dtype), t.desc());
  IC_CHECK(t.device() == device, "{}: expected on {} but got {}", name, device_name(device),
           t.desc());
  IC_CHECK(t.rank() == rank, "{}: expected rank {} but got {}", name, rank, t.desc());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* what) {
  IC_CHECK(a.device() == b.device(), "{}: tensors on different devices ({} vs {})", what,
           a.desc(), b.desc());
}

}  // namespace ic
