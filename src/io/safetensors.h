#pragma once
// safetensors reader, writer and sharded checkpoints (HF `model.safetensors.index.json`).
//
// A file is: u64 little-endian header length N, N bytes of JSON (an object of tensor name ->
// {dtype, shape, data_offsets: [begin, end]} plus an optional "__metadata__" string map),
// then the data section. Offsets are relative to the data section; tensors must cover it
// exactly, without overlaps or holes. The reader memory-maps the file and validates all of
// that up front; every malformed or truncated input is an ic::Error naming the file, the
// tensor where there is one, and the byte offset or value that is wrong.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace ic::safetensors {

// Largest header the reader accepts (the reference implementation's limit).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype name ("F32" -> 4), or 0 for names indexcache does
// not read (including the sub-byte F4/F6 types).
int64_t dtype_size(std::string_view name);
// Where the reference writer puts a dtype: tensors of higher rank come first (sizes never
// increase along it, which keeps every tensor aligned). -1 for unknown names.
int dtype_layout_rank(std::string_view name);
// ic::DType of a safetensors dtype name, or nullopt when indexcache has none (I64, BOOL, ...).
std::optional<DType> dtype_from_name(std::string_view name);
// safetensors name of an ic::DType; throws for types safetensors has no form of (Q4_0, ...).
std::string_view name_from_dtype(DType t);

struct TensorInfo {
  std::string name;
  std::string dtype_name;       // as written in the file: "BF16", "I64", ...
  std::optional<DType> dtype;   // mapped when indexcache has the type (F32/F16/BF16/F8_E4M3/I32)
  std::vector<int64_t> dims;    // row-major; empty for a scalar; may exceed ic::kMaxRank
  uint64_t begin = 0;           // data_offsets, relative to the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // into the mapping, valid while the File lives; may be
                                  // unaligned for files written by other tools
  int64_t nbytes = 0;

  int64_t numel() const;
  // As an ic::Shape; throws naming the tensor when the rank exceeds ic::kMaxRank.
  Shape shape() const;
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

  const std::string& path() const { return path_; }
  int64_t file_size() const { return static_cast<int64_t>(size_); }
  uint64_t header_size() const { return header_size_; }      // N, the JSON's byte count
  uint64_t data_offset() const { return 8 + header_size_; }  // start of the data section

  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }
  const std::string* find_metadata(std::string_view key) const;  // null if absent
  const std::string& metadata(std::string_view key) const;       // throws naming key and file

  // In data-section order (which is the order of the bytes in the file).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;  // null if absent
  const TensorInfo& tensor(std::string_view name) const;  // throws naming tensor and file

  // A CPU ic::Tensor over the mapped bytes that keeps the mapping alive; the tensor must be of
  // a mapped dtype and rank <= ic::kMaxRank. Treat it as read-only (the mapping is). A
  // tensor whose bytes are not aligned to its element size (possible in files written by
  // other tools) is returned as an aligned copy instead, so kernels never see unaligned data.
  Tensor tensor_view(std::string_view name) const;
  Tensor tensor_view(const TensorInfo& info) const;
  // A new F32 tensor converted from F32, F16, BF16, F8_E4M3 or F8_E5M2.
  Tensor read_f32(std::string_view name) const;
  Tensor read_f32(const TensorInfo& info) const;

 private:
  File() = default;
  void parse();

  std::string path_;
  std::shared_ptr<const void> owner_;  // the mapping or the owned buffer
  const uint8_t* base_ = nullptr;       // [size_] bytes of the whole file
  size_t size_ = 0;
  uint64_t header_size_ = 0;
  std::map<std::string, std::string, std::less<>> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> index into tensors_
};

// Builds a safetensors file byte-identical to the reference implementation's: tensors sorted
// by dtype_layout_rank (largest element first, so every tensor stays aligned to its element
// size) and then by name, "__metadata__" first in the header, header padded with spaces to a
// multiple of 8. The same inputs always give the same bytes.
class Writer {
 public:
  // Metadata string map; setting a key again replaces its value.
  void set_metadata(std::string key, std::string value);
  // A host tensor of F32, F16, BF16, F8_E4M3 or I32. The writer keeps a reference to the
  // tensor's storage (no copy) and reads the bytes in bytes()/write(): do not modify it in
  // between.
  void add(std::string name, const Tensor& t);
  // Raw bytes of any dtype the reader knows ("I64", "BOOL", ...); copied. nbytes must equal
  // the shape's element count times the dtype's size.
  void add_raw(std::string name, std::string_view dtype, std::vector<int64_t> shape,
               const void* data, int64_t nbytes);

  std::vector<uint8_t> bytes() const;
  // Atomic: writes `path.tmp.<pid>`, fsyncs it, renames it over `path` and fsyncs the
  // directory, so a killed writer never leaves a partial file under the final name.
  void write(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    std::string dtype;
    std::vector<int64_t> dims;
    int64_t nbytes = 0;
    Tensor tensor;               // add(): the caller's host tensor
    std::vector<uint8_t> bytes;  // add_raw(): a copy
    const uint8_t* data() const;
  };
  void check_new_name(const std::string& name) const;
  // Pending tensors in file order, and the padded header.
  std::vector<const Pending*> ordered() const;
  std::string header(const std::vector<const Pending*>& order) const;

  std::map<std::string, std::string> metadata_;
  std::vector<Pending> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A checkpoint split over shards: `model.safetensors.index.json` maps each tensor name to a
// shard file in the same directory ({"metadata": {...}, "weight_map": {name: file}}). Shards
// are opened (mmap) on first use; the object is safe to use from several threads.
class ShardedModel {
 public:
  // A directory (holding model.safetensors.index.json, or else a single model.safetensors),
  // an index JSON file, or a single .safetensors file. Every shard the index names must exist.
  static ShardedModel open(const std::string& path);

  ShardedModel(ShardedModel&&) noexcept = default;
  ShardedModel& operator=(ShardedModel&&) noexcept = default;
  ~ShardedModel() = default;

  const std::string& path() const { return index_path_; }
  const std::string& dir() const { return dir_; }
  // The index's "metadata" object; string values as they are, others as JSON text.
  const std::map<std::string, std::string>& index_metadata() const { return index_metadata_; }
  // Tensor name -> shard file name (relative to dir()), sorted by tensor name.
  const std::map<std::string, std::string, std::less<>>& weight_map() const { return weight_map_; }
  std::vector<std::string> shard_names() const;  // distinct, sorted

  bool has(std::string_view name) const { return weight_map_.count(name) != 0; }
  // Null when the index does not name the tensor; throws when the index names it but its
  // shard cannot be opened or does not hold it.
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& tensor(std::string_view name) const;  // throws naming tensor and index
  Tensor tensor_view(std::string_view name) const;
  Tensor read_f32(std::string_view name) const;
  // The shard (opened now if needed), by its file name as the index writes it.
  const File& shard(std::string_view shard_name) const;

  // Opens every shard and checks that each holds the tensors the index maps to it.
  void check_all() const;

 private:
  ShardedModel() = default;

  std::string index_path_;
  std::string dir_;
  std::map<std::string, std::string> index_metadata_;
  std::map<std::string, std::string, std::less<>> weight_map_;
  // Lazily opened shards; guarded by mutex_. unique_ptr keeps File addresses stable.
  mutable std::unique_ptr<std::mutex> mutex_;
  mutable std::map<std::string, std::unique_ptr<File>, std::less<>> shards_;
};

}  // namespace ic::safetensors
