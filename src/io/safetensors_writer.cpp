// safetensors writer. Layout and ordering follow the reference implementation so files are
// byte-identical for the same inputs and every tensor sits at a multiple of its element size:
// the data section starts at a multiple of 8 (the header is padded with spaces) and tensors
// are laid out largest element first, so each one's offset is a sum of sizes that are
// multiples of its own element size.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace ic::safetensors {

const uint8_t* Writer::Pending::data() const {
  return tensor.defined() ? static_cast<const uint8_t*>(tensor.raw()) : bytes.data();
}

void Writer::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

void Writer::check_new_name(const std::string& name) const {
  IC_CHECK(!name.empty(), "safetensors writer: empty tensor name");
  IC_CHECK(name != "__metadata__", "safetensors writer: '__metadata__' is reserved and cannot "
           "name a tensor");
  IC_CHECK(index_.count(name) == 0, "safetensors writer: duplicate tensor name '{}'", name);
}

void Writer::add(std::string name, const Tensor& t) {
  check_new_name(name);
  IC_CHECK(t.defined(), "safetensors writer: tensor '{}' is undefined", name);
  IC_CHECK(t.device() == Device::CPU, "safetensors writer: tensor '{}' is {}, not on the CPU",
           name, t.desc());
  Pending p;
  try {
    p.dtype = std::string(name_from_dtype(t.dtype()));
  } catch (const Error& e) {
    fail("safetensors writer: tensor '{}': {}", name, e.what());
  }
  for (int k = 0; k < t.rank(); ++k) p.dims.push_back(t.dim(k));
  p.nbytes = t.nbytes();
  p.tensor = t;
  p.name = name;
  index_.emplace(std::move(name), tensors_.size());
  tensors_.push_back(std::move(p));
}

void Writer::add_raw(std::string name, std::string_view dtype, std::vector<int64_t> shape,
                     const void* data, int64_t nbytes) {
  check_new_name(name);
  const int64_t size = dtype_size(dtype);
  IC_CHECK(size > 0, "safetensors writer: tensor '{}' has unknown dtype '{}'", name, dtype);
  int64_t numel = 1;
  bool zero = false;
  for (int64_t d : shape) {
    IC_CHECK(d >= 0, "safetensors writer: tensor '{}' has a negative dimension {}", name, d);
    zero = zero || d == 0;
  }
  if (zero) numel = 0;
  else
    for (int64_t d : shape)
      IC_CHECK(!__builtin_mul_overflow(numel, d, &numel),
               "safetensors writer: tensor '{}': element count overflows int64", name);
  int64_t expected = 0;
  IC_CHECK(!__builtin_mul_overflow(numel, size, &expected),
           "safetensors writer: tensor '{}': byte size overflows int64", name);
  IC_CHECK(nbytes == expected,
           "safetensors writer: tensor '{}' has {} bytes but {} elements of {} need {}", name,
           nbytes, numel, dtype, expected);
  IC_CHECK(data != nullptr || nbytes == 0, "safetensors writer: tensor '{}' has no data", name);
  Pending p;
  p.name = name;
  p.dtype = std::string(dtype);
  p.dims = std::move(shape);
  p.nbytes = nbytes;
  const auto* b = static_cast<const uint8_t*>(data);
  p.bytes.assign(b, b + nbytes);
  index_.emplace(std::move(name), tensors_.size());
  tensors_.push_back(std::move(p));
}

std::vector<const Writer::Pending*> Writer::ordered() const {
  std::vector<const Pending*> order;
  for (const Pending& p : tensors_) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](const Pending* a, const Pending* b) {
    const int ra = dtype_layout_rank(a->dtype), rb = dtype_layout_rank(b->dtype);
    if (ra != rb) return ra > rb;
    return a->name < b->name;
  });
  return order;
}

std::string Writer::header(const std::vector<const Pending*>& order) const {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) md[k] = v;
    h["__metadata__"] = std::move(md);
  }
  int64_t offset = 0;
  for (const Pending* p : order) {
    h[p->name] = {{"dtype", p->dtype},
                  {"shape", p->dims},
                  {"data_offsets", {offset, offset + p->nbytes}}};
    offset += p->nbytes;
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors writer: a tensor name or metadata string is not valid UTF-8: {}", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::vector<uint8_t> Writer::bytes() const {
  const std::vector<const Pending*> order = ordered();
  const std::string h = header(order);
  size_t total = 8 + h.size();
  for (const Pending* p : order) total += static_cast<size_t>(p->nbytes);
  std::vector<uint8_t> out(total);
  const uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, h.data(), h.size());
  size_t at = 8 + h.size();
  for (const Pending* p : order) {
    if (p->nbytes) std::memcpy(out.data() + at, p->data(), static_cast<size_t>(p->nbytes));
    at += static_cast<size_t>(p->nbytes);
  }
  return out;
}

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; large tensors take several.
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    IC_CHECK(w > 0, "safetensors writer: write to {} failed: {}", path,
             w < 0 ? std::strerror(errno) : "no progress");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void Writer::write(const std::string& path) const {
  const std::vector<const Pending*> order = ordered();
  const std::string h = header(order);
  const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(::getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  IC_CHECK(fd >= 0, "safetensors writer: cannot create {}: {}", tmp, std::strerror(errno));
  bool closed = false;
  try {
    const uint64_t n = h.size();
    write_all(fd, &n, 8, tmp);
    write_all(fd, h.data(), h.size(), tmp);
    for (const Pending* p : order) write_all(fd, p->data(), static_cast<size_t>(p->nbytes), tmp);
    IC_CHECK(::fsync(fd) == 0, "safetensors writer: fsync of {} failed: {}", tmp,
             std::strerror(errno));
    const int rc = ::close(fd);
    closed = true;  // even a failed close releases the descriptor on Linux
    IC_CHECK(rc == 0, "safetensors writer: close of {} failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("safetensors writer: cannot rename {} to {}: {}", tmp, path, std::strerror(e));
  }
  // Make the rename itself durable. The file is complete under its final name already, so a
  // directory that cannot be synced (some filesystems refuse) is not worth an error.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ic::safetensors
