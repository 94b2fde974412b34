#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace ic {

namespace {
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};
}  // namespace

MappedBytes MappedBytes::map(const std::string& path, const char* kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  IC_CHECK(fd >= 0, "cannot open {} file {}: {}", kind, path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("cannot stat {} file {}: {}", kind, path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{} file {} is not a regular file", kind, path);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail("{} file {} is empty", kind, path);
  }
  void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  IC_CHECK(addr != MAP_FAILED, "cannot mmap {} file {} ({} bytes): {}", kind, path, size, std::strerror(e));
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->size = size;
  return {static_cast<const uint8_t*>(addr), size, std::move(mapping)};
}

MappedBytes MappedBytes::own(std::vector<uint8_t> bytes) {
  auto buf = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  return {buf->data(), buf->size(), buf};
}

std::string read_file_bounded(const std::string& path, uint64_t limit, std::string_view what) {
  namespace fs = std::filesystem;
  std::error_code ec;  // the error_code overloads: the throwing ones raise a non-ic exception
  IC_CHECK(fs::is_regular_file(path, ec), "{} does not exist or is not a regular file", path);
  const uintmax_t size = fs::file_size(path, ec);
  IC_CHECK(!ec, "cannot read {}: {}", path, ec.message());
  IC_CHECK(size <= limit, "{} is {} bytes, more than the {}-byte limit{}{}", path, size, limit,
           what.empty() ? "" : " for ", what);
  std::ifstream in(path, std::ios::binary);
  IC_CHECK(in.good(), "cannot open {}: {}", path, std::strerror(errno));
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  IC_CHECK(in.gcount() == static_cast<std::streamsize>(size), "short read of {} ({} of {} bytes)",
           path, in.gcount(), size);
  return text;
}

}  // namespace ic
