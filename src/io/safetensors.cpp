// safetensors parsing and validation, and sharded checkpoints. The JSON header is parsed by
// nlohmann-json with a callback that rejects duplicate keys (the DOM would silently keep the
// last one) and bounds the nesting depth; everything else is checked on the DOM: types of
// every field, dtype names, shape and size arithmetic without overflow, and that the tensors
// tile the data section exactly (the format forbids holes and overlaps so that a file cannot
// hide a second payload).
#include "io/safetensors.h"


#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/mapped_file.h"

namespace ic::safetensors {

static_assert(std::endian::native == std::endian::little,
              "the safetensors reader assumes a little-endian host");

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct DTypeEntry {
  std::string_view name;
  int64_t size;
  std::optional<DType> dtype;
};

// In the order of the reference implementation's dtype enum, which its writer uses (largest
// position first) to lay out tensors; see Writer.
const std::array<DTypeEntry, 17> kDTypes = {{
    {"BOOL", 1, std::nullopt},
    {"U8", 1, std::nullopt},
    {"I8", 1, std::nullopt},
    {"F8_E5M2", 1, std::nullopt},
    {"F8_E4M3", 1, DType::F8_E4M3},
    {"F8_E8M0", 1, std::nullopt},
    {"I16", 2, std::nullopt},
    {"U16", 2, std::nullopt},
    {"F16", 2, DType::F16},
    {"BF16", 2, DType::BF16},
    {"I32", 4, DType::I32},
    {"U32", 4, std::nullopt},
    {"F32", 4, DType::F32},
    {"C64", 8, std::nullopt},
    {"F64", 8, std::nullopt},
    {"I64", 8, std::nullopt},
    {"U64", 8, std::nullopt},
}};

const DTypeEntry* find_dtype(std::string_view name) {
  for (const DTypeEntry& e : kDTypes)
    if (e.name == name) return &e;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const DTypeEntry& e : kDTypes) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

// Well-formed headers nest three deep (header -> entry -> shape); anything much deeper is
// hostile, and refusing it early keeps the DOM small.
constexpr int kMaxJsonDepth = 8;

// Parses JSON text, rejecting duplicate keys in any object and nesting deeper than
// kMaxJsonDepth. `what` names the text in messages ("header", "index").
json parse_json_strict(std::string_view text, const char* what, uint64_t file_offset) {
  std::vector<std::set<std::string>> keys;  // one key set per open object
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    IC_CHECK(depth <= kMaxJsonDepth, "{} JSON nests deeper than {} levels", what, kMaxJsonDepth);
    switch (event) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        if (keys.empty()) break;
        const std::string& k = parsed.get_ref<const std::string&>();
        IC_CHECK(keys.back().insert(k).second, "duplicate key '{}' in the {} JSON", k, what);
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::parse_error& e) {
    fail("{} is not valid JSON (error near byte {} of the {}, file offset {}): {}", what,
         e.byte, what, file_offset + (e.byte ? e.byte - 1 : 0), e.what());
  } catch (const json::exception& e) {
    fail("{} JSON: {}", what, e.what());
  }
}

// A JSON number as a non-negative int64, or an error saying what it is instead.
int64_t to_index(const json& v, const char* what) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    IC_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "{} {} does not fit in int64", what, u);
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) fail("{} {} is negative", what, v.get<int64_t>());
  if (v.is_number()) fail("{} {} is not an integer", what, v.dump());
  fail("{} is a JSON {}, expected a non-negative integer", what, v.type_name());
}

TensorInfo parse_entry(const std::string& name, const json& v) {
  IC_CHECK(v.is_object(), "entry is a JSON {}, expected an object with dtype, shape and "
           "data_offsets", v.type_name());
  TensorInfo t;
  t.name = name;
  auto dt = v.find("dtype");
  IC_CHECK(dt != v.end(), "entry has no \"dtype\"");
  IC_CHECK(dt->is_string(), "dtype is a JSON {}, expected a string", dt->type_name());
  t.dtype_name = dt->get<std::string>();
  const DTypeEntry* e = find_dtype(t.dtype_name);
  if (!e) {
    if (t.dtype_name == "F4" || t.dtype_name == "F6_E2M3" || t.dtype_name == "F6_E3M2")
      fail("dtype {} (sub-byte) is not supported", t.dtype_name);
    fail("unknown dtype '{}' (known: {})", t.dtype_name, known_dtypes());
  }
  t.dtype = e->dtype;

  auto sh = v.find("shape");
  IC_CHECK(sh != v.end(), "entry has no \"shape\"");
  IC_CHECK(sh->is_array(), "shape is a JSON {}, expected an array", sh->type_name());
  bool zero = false;
  for (size_t k = 0; k < sh->size(); ++k) {
    t.dims.push_back(to_index((*sh)[k], "shape dimension"));
    zero = zero || t.dims.back() == 0;
  }
  int64_t numel = 1;
  if (zero) {
    numel = 0;
  } else {
    for (int64_t d : t.dims)
      IC_CHECK(!__builtin_mul_overflow(numel, d, &numel), "element count of shape {} overflows "
               "int64", sh->dump());
  }
  int64_t nbytes = 0;
  IC_CHECK(!__builtin_mul_overflow(numel, e->size, &nbytes),
           "byte size of {} {} elements overflows int64", numel, t.dtype_name);
  t.nbytes = nbytes;

  auto off = v.find("data_offsets");
  IC_CHECK(off != v.end(), "entry has no \"data_offsets\"");
  IC_CHECK(off->is_array() && off->size() == 2,
           "data_offsets is {}, expected an array [begin, end]", off->dump());
  t.begin = static_cast<uint64_t>(to_index((*off)[0], "data_offsets begin"));
  t.end = static_cast<uint64_t>(to_index((*off)[1], "data_offsets end"));
  IC_CHECK(t.begin <= t.end, "data_offsets [{}, {}] end before they begin", t.begin, t.end);
  IC_CHECK(t.end - t.begin == static_cast<uint64_t>(nbytes),
           "data_offsets [{}, {}] span {} bytes but shape {} of {} needs {} bytes", t.begin,
           t.end, t.end - t.begin, sh->dump(), t.dtype_name, nbytes);
  return t;
}

}  // namespace

int64_t dtype_size(std::string_view name) {
  const DTypeEntry* e = find_dtype(name);
  return e ? e->size : 0;
}

int dtype_layout_rank(std::string_view name) {
  for (size_t k = 0; k < kDTypes.size(); ++k)
    if (kDTypes[k].name == name) return static_cast<int>(k);
  return -1;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  const DTypeEntry* e = find_dtype(name);
  return e ? e->dtype : std::nullopt;
}

std::string_view name_from_dtype(DType t) {
  for (const DTypeEntry& e : kDTypes)
    if (e.dtype == t) return e.name;
  fail("dtype {} has no safetensors form (safetensors holds F32, F16, BF16, F8_E4M3, I32 of "
       "indexcache's types)", dtype_name(t));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // validated against overflow when parsed
  return n;
}

Shape TensorInfo::shape() const {
  IC_CHECK(dims.size() <= static_cast<size_t>(kMaxRank),
           "tensor '{}' has rank {}, more than indexcache's maximum {}", name, dims.size(),
           kMaxRank);
  Shape s;
  s.rank = static_cast<int>(dims.size());
  for (int k = 0; k < s.rank; ++k) s.dims[k] = dims[k];
  return s;
}

File File::open(const std::string& path) {
  MappedBytes m = MappedBytes::map(path, "safetensors");
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
  try {
    IC_CHECK(size_ >= 8, "file is {} bytes, too short for the 8-byte header length", size_);
    uint64_t n;
    std::memcpy(&n, base_, 8);
    IC_CHECK(n <= kMaxHeaderBytes,
             "header length {} (bytes 0..7) exceeds the {}-byte limit: corrupt, or not a "
             "safetensors file", n, kMaxHeaderBytes);
    IC_CHECK(n <= size_ - 8,
             "header length {} (bytes 0..7) runs past the end of the file (size {}, {} bytes "
             "after the length)", n, size_, size_ - 8);
    header_size_ = n;
    const uint64_t data_size = size_ - 8 - n;

    const json j = parse_json_strict(
        std::string_view(reinterpret_cast<const char*>(base_ + 8), static_cast<size_t>(n)),
        "header", 8);
    IC_CHECK(j.is_object(), "header is a JSON {}, expected an object", j.type_name());

    for (const auto& [key, v] : j.items()) {
      if (key == "__metadata__") {
        if (v.is_null()) continue;
        IC_CHECK(v.is_object(), "__metadata__ is a JSON {}, expected an object of strings",
                 v.type_name());
        for (const auto& [mk, mv] : v.items()) {
          IC_CHECK(mv.is_string(), "__metadata__ value of '{}' is a JSON {}, expected a string",
                   mk, mv.type_name());
          metadata_.emplace(mk, mv.get<std::string>());
        }
        continue;
      }
      try {
        tensors_.push_back(parse_entry(key, v));
      } catch (const Error& e) {
        fail("tensor '{}': {}", key, e.what());
      }
    }

    // The tensors must tile [0, data_size) exactly; sorting by offsets makes both overlaps
    // and holes show up between neighbours.
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      if (a.begin != b.begin) return a.begin < b.begin;
      if (a.end != b.end) return a.end < b.end;
      return a.name < b.name;
    });
    uint64_t covered = 0;
    const TensorInfo* prev = nullptr;
    for (const TensorInfo& t : tensors_) {
      IC_CHECK(t.end <= data_size,
               "tensor '{}' data_offsets [{}, {}] run past the end of the data section ({} "
               "bytes from file offset {}; file size {})", t.name, t.begin, t.end, data_size,
               8 + n, size_);
      if (t.begin < covered)
        fail("tensor '{}' data_offsets [{}, {}] overlap tensor '{}' data_offsets [{}, {}]",
             t.name, t.begin, t.end, prev->name, prev->begin, prev->end);
      IC_CHECK(t.begin == covered,
               "hole in the data section: bytes [{}, {}) before tensor '{}' belong to no tensor",
               covered, t.begin, t.name);
      covered = t.end;
      prev = &t;
    }
    IC_CHECK(covered == data_size,
             "data section has {} bytes (file offset {} to {}) but the tensors cover only the "
             "first {}: trailing bytes belong to no tensor", data_size, 8 + n, size_, covered);

    for (size_t k = 0; k < tensors_.size(); ++k) {
      TensorInfo& t = tensors_[k];
      t.data = base_ + 8 + n + t.begin;
      // Duplicates were rejected by the JSON parser already; this is an invariant.
      IC_ASSERT(index_.emplace(t.name, k).second);
    }
  } catch (const Error& e) {
    fail("safetensors {}: {}", path_, e.what());
  }
}

const std::string* File::find_metadata(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const std::string& File::metadata(std::string_view key) const {
  const std::string* v = find_metadata(key);
  IC_CHECK(v != nullptr, "metadata key '{}' not found in {} ({} keys)", key, path_,
           metadata_.size());
  return *v;
}

const TensorInfo* File::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
  const TensorInfo* t = find(name);
  IC_CHECK(t != nullptr, "tensor '{}' not found in {} ({} tensors)", name, path_,
           tensors_.size());
  return *t;
}

Tensor File::tensor_view(std::string_view name) const { return tensor_view(tensor(name)); }

Tensor File::tensor_view(const TensorInfo& info) const {
  IC_ASSERT(info.data >= base_ && info.data + info.nbytes <= base_ + size_);
  IC_CHECK(info.dtype.has_value(),
           "tensor '{}' in {} has dtype {}, which indexcache has no DType for (its raw bytes "
           "are in tensor(name).data)", info.name, path_, info.dtype_name);
  Shape shape;
  try {
    shape = info.shape();
  } catch (const Error& e) {
    fail("{}: {}", path_, e.what());
  }
  const int64_t align = dtype_size(info.dtype_name);
  if (reinterpret_cast<uintptr_t>(info.data) % static_cast<uintptr_t>(align) != 0) {
    Tensor t = Tensor::empty(shape, *info.dtype);
    if (info.nbytes > 0) std::memcpy(t.raw(), info.data, static_cast<size_t>(info.nbytes));
    return t;
  }
  // The mapping is read-only: callers must treat the view as const (ic::Tensor has no
  // const-element flavour, so the cast happens here, once).
  return Tensor::borrow(const_cast<uint8_t*>(info.data), shape, *info.dtype, Device::CPU,
                        std::const_pointer_cast<void>(owner_));
}

Tensor File::read_f32(std::string_view name) const { return read_f32(tensor(name)); }

namespace {

template <typename T, typename Convert>
void convert_all(const uint8_t* src, float* dst, int64_t n, Convert convert) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(T)), sizeof(T));  // may be unaligned
    dst[i] = convert(v);
  }
}

}  // namespace

Tensor File::read_f32(const TensorInfo& info) const {
  Shape shape;
  try {
    shape = info.shape();
  } catch (const Error& e) {
    fail("{}: {}", path_, e.what());
  }
  const std::string& dt = info.dtype_name;
  IC_CHECK(dt == "F32" || dt == "F16" || dt == "BF16" || dt == "F8_E4M3" || dt == "F8_E5M2",
           "tensor '{}' in {} has dtype {}; read_f32 converts F32, F16, BF16, F8_E4M3 and "
           "F8_E5M2", info.name, path_, dt);
  Tensor out = Tensor::empty(shape, DType::F32);
  float* dst = out.data<float>();
  const int64_t n = info.numel();
  if (n == 0) return out;  // an empty tensor's storage may be null: nothing to convert
  if (dt == "F32") std::memcpy(dst, info.data, static_cast<size_t>(info.nbytes));
  else if (dt == "F16") convert_all<uint16_t>(info.data, dst, n, f16_to_f32);
  else if (dt == "BF16") convert_all<uint16_t>(info.data, dst, n, bf16_to_f32);
  else if (dt == "F8_E4M3") convert_all<uint8_t>(info.data, dst, n, f8e4m3_to_f32);
  // e5m2 is the upper byte of an IEEE half.
  else if (dt == "F8_E5M2")
    convert_all<uint8_t>(info.data, dst, n,
                         [](uint8_t v) { return f16_to_f32(static_cast<uint16_t>(v << 8)); });
  return out;
}

// ---------------------------------------------------------------------------------------
// Sharded checkpoints.

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";

// Shard names come from a file we do not control: keep them inside the checkpoint directory.
bool is_safe_relative(const std::string& name) {
  if (name.empty()) return false;
  const fs::path p(name);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const fs::path& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

namespace {
// Whether `p` exists, through the error_code overloads: the throwing ones raise
// std::filesystem_error for a path the system cannot look at (a name too long, a loop of
// symlinks, a directory we may not search), which must be an ic::Error naming the path.
bool checkpoint_path_exists(const fs::path& p, std::string_view what) {
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (st.type() == fs::file_type::not_found) return false;  // ENOENT / ENOTDIR: just absent
  IC_CHECK(!ec, "cannot look at {} {}: {}", what, p.string(), ec.message());
  return true;
}
}  // namespace

ShardedModel ShardedModel::open(const std::string& path) {
  ShardedModel m;
  m.mutex_ = std::make_unique<std::mutex>();
  IC_CHECK(checkpoint_path_exists(path, "checkpoint"), "checkpoint {} does not exist", path);
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);

  std::string single;  // a lone .safetensors file instead of an index
  if (fs::is_directory(st)) {
    m.dir_ = path;
    const fs::path index = fs::path(path) / kIndexName;
    const fs::path lone = fs::path(path) / "model.safetensors";
    if (checkpoint_path_exists(index, "checkpoint index")) m.index_path_ = index.string();
    else if (checkpoint_path_exists(lone, "checkpoint file")) single = lone.string();
    else fail("checkpoint directory {} has neither {} nor model.safetensors", path, kIndexName);
  } else {
    m.dir_ = fs::path(path).parent_path().string();
    if (m.dir_.empty()) m.dir_ = ".";
    if (fs::path(path).extension() == ".json") m.index_path_ = path;
    else single = path;
  }

  if (!single.empty()) {
    auto f = std::make_unique<File>(File::open(single));
    const std::string shard = fs::path(single).filename().string();
    for (const TensorInfo& t : f->tensors()) m.weight_map_.emplace(t.name, shard);
    m.index_path_ = single;
    m.shards_.emplace(shard, std::move(f));
    return m;
  }

  try {
    const std::string text = read_file_bounded(m.index_path_, kMaxHeaderBytes, "an index");
    const json j = parse_json_strict(text, "index", 0);
    IC_CHECK(j.is_object(), "index is a JSON {}, expected an object", j.type_name());
    if (auto md = j.find("metadata"); md != j.end() && !md->is_null()) {
      IC_CHECK(md->is_object(), "\"metadata\" is a JSON {}, expected an object",
               md->type_name());
      for (const auto& [k, v] : md->items())
        m.index_metadata_.emplace(k, v.is_string() ? v.get<std::string>() : v.dump());
    }
    auto wm = j.find("weight_map");
    IC_CHECK(wm != j.end(), "index has no \"weight_map\"");
    IC_CHECK(wm->is_object(), "\"weight_map\" is a JSON {}, expected an object of tensor name "
             "-> shard file", wm->type_name());
    for (const auto& [name, v] : wm->items()) {
      IC_CHECK(v.is_string(), "weight_map entry '{}' is a JSON {}, expected a shard file name",
               name, v.type_name());
      const std::string shard = v.get<std::string>();
      IC_CHECK(is_safe_relative(shard),
               "weight_map maps tensor '{}' to '{}', which is not a relative path inside the "
               "checkpoint directory", name, shard);
      m.weight_map_.emplace(name, shard);
    }
    // Check that every shard is there now rather than deep inside a model load.
    std::map<std::string, std::pair<std::string, size_t>> users;  // shard -> (a tensor, count)
    for (const auto& [name, shard] : m.weight_map_) {
      auto [it, inserted] = users.emplace(shard, std::make_pair(name, size_t{0}));
      ++it->second.second;
    }
    for (const auto& [shard, use] : users) {
      const fs::path p = fs::path(m.dir_) / shard;
      IC_CHECK(fs::is_regular_file(p, ec),
               "shard {} is missing (the index maps {} tensors to it, e.g. '{}')", p.string(),
               use.second, use.first);
    }
  } catch (const Error& e) {
    fail("safetensors index {}: {}", m.index_path_, e.what());
  }
  return m;
}

std::vector<std::string> ShardedModel::shard_names() const {
  std::set<std::string> s;
  for (const auto& [name, shard] : weight_map_) s.insert(shard);
  return {s.begin(), s.end()};
}

const File& ShardedModel::shard(std::string_view shard_name) const {
  std::lock_guard<std::mutex> lock(*mutex_);
  auto it = shards_.find(shard_name);
  if (it != shards_.end()) return *it->second;
  bool known = false;
  for (const auto& [name, shard] : weight_map_)
    if (shard == shard_name) {
      known = true;
      break;
    }
  IC_CHECK(known, "{} names no shard '{}'", index_path_, shard_name);
  const std::string p = (fs::path(dir_) / std::string(shard_name)).string();
  auto f = std::make_unique<File>(File::open(p));
  return *shards_.emplace(std::string(shard_name), std::move(f)).first->second;
}

const TensorInfo* ShardedModel::find(std::string_view name) const {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) return nullptr;
  const File& f = shard(it->second);
  const TensorInfo* t = f.find(name);
  IC_CHECK(t != nullptr, "{} maps tensor '{}' to shard {}, but that shard does not contain it",
           index_path_, name, f.path());
  return t;
}

const TensorInfo& ShardedModel::tensor(std::string_view name) const {
  const TensorInfo* t = find(name);
  IC_CHECK(t != nullptr, "tensor '{}' not found in {} ({} tensors)", name, index_path_,
           weight_map_.size());
  return *t;
}

Tensor ShardedModel::tensor_view(std::string_view name) const {
  const TensorInfo& t = tensor(name);
  return shard(weight_map_.find(name)->second).tensor_view(t);
}

Tensor ShardedModel::read_f32(std::string_view name) const {
  const TensorInfo& t = tensor(name);
  return shard(weight_map_.find(name)->second).read_f32(t);
}

void ShardedModel::check_all() const {
  for (const auto& [name, shard_name] : weight_map_) find(name);
}

}  // namespace ic::safetensors
