#include "model/dsa.h"

#include <cstdlib>

#include "core/error.h"
#include "io/safetensors.h"

namespace ic {

namespace {
const char* const kParts[] = {"wq", "wk", "k_norm", "k_bias", "wproj"};

std::string tensor_name(int64_t layer, const char* part) {
  return "blk." + std::to_string(layer) + ".indexer." + part;
}

Tensor* part_of(IndexerWeights& w, const std::string& part) {
  if (part == "wq") return &w.wq;
  if (part == "wk") return &w.wk;
  if (part == "k_norm") return &w.k_norm;
  if (part == "k_bias") return &w.k_bias;
  return &w.wproj;
}

int64_t meta_int(const safetensors::File& f, const char* key) {
  const std::string& v = f.metadata(key);
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  IC_CHECK(end && *end == '\0' && !v.empty(), "{}: metadata {} = '{}' is not an integer", f.path(), key, v);
  return x;
}

double meta_float(const safetensors::File& f, const char* key) {
  const std::string& v = f.metadata(key);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  IC_CHECK(end && *end == '\0' && !v.empty(), "{}: metadata {} = '{}' is not a number", f.path(), key, v);
  return x;
}
}  // namespace

int64_t DsaSpec::key_cache_bytes_per_token(Device device) const {
  return pattern.n_full() * dtype_row_bytes(indexer_key_dtype(device), config.head_dim);
}

int64_t DsaSpec::weight_bytes() const {
  int64_t b = 0;
  for (const IndexerWeights& w : indexers)
    if (w.wq.defined()) b += w.wq.nbytes() + w.wk.nbytes() + w.k_norm.nbytes() + w.k_bias.nbytes() + w.wproj.nbytes();
  return b;
}

DsaSpec load_indexers(const std::string& path, int64_t n_layers, int64_t dim, const std::optional<LayerPattern>& pattern,
                      std::optional<int64_t> topk) {
  const safetensors::File f = safetensors::File::open(path);
  const std::string* format = f.find_metadata("indexcache.format");
  IC_CHECK(format && *format == "indexers-v1", "{}: not an indexcache indexer file (metadata indexcache.format is {})",
           path, format ? "'" + *format + "'" : std::string("missing"));
  IC_CHECK(meta_int(f, "indexcache.n_layers") == n_layers && meta_int(f, "indexcache.dim") == dim,
           "{}: indexers were made for {} layers of width {}, the model has {} of width {}", path,
           meta_int(f, "indexcache.n_layers"), meta_int(f, "indexcache.dim"), n_layers, dim);
  DsaSpec spec;
  IndexerConfig& c = spec.config;
  c.n_heads = meta_int(f, "indexcache.n_heads");
  c.head_dim = meta_int(f, "indexcache.head_dim");
  c.rope_dim = meta_int(f, "indexcache.rope_dim");
  c.rope_style = ops::rope_style_from_string(f.metadata("indexcache.rope_style"));
  c.rope_base = static_cast<float>(meta_float(f, "indexcache.rope_base"));
  c.norm_eps = static_cast<float>(meta_float(f, "indexcache.norm_eps"));
  c.topk = topk ? *topk : meta_int(f, "indexcache.topk");
  c.validate(dim);
  spec.pattern = pattern ? *pattern : LayerPattern::parse(f.metadata("indexcache.pattern"), n_layers);
  IC_CHECK(spec.pattern.n_layers() == n_layers, "pattern {} has {} layers, the model {}", spec.pattern.str(),
           spec.pattern.n_layers(), n_layers);
  for (const auto& [k, v] : f.metadata()) spec.metadata[k] = v;
  spec.indexers.resize(static_cast<size_t>(n_layers));
  for (int64_t l = 0; l < n_layers; ++l) {
    if (!spec.pattern.is_full(l)) continue;  // S layers: load nothing
    IndexerWeights& w = spec.indexers[l];
    for (const char* part : kParts) {
      const std::string name = tensor_name(l, part);
      IC_CHECK(f.find(name), "{}: layer {} is F in pattern {} but the file has no indexer for it ({} missing)", path, l,
               spec.pattern.str(), name);
      *part_of(w, part) = f.read_f32(name);
    }
    w.check(c, dim);
  }
  return spec;
}

namespace {
// The F32 master tensor `t` rounded to `storage` (F32 returns it as is).
Tensor stored_as(const Tensor& t, DType storage) {
  if (storage == DType::F32) return t;
  Tensor out = Tensor::empty(t.shape(), storage);
  const float* src = t.data<float>();
  uint16_t* dst = static_cast<uint16_t*>(out.raw());
  for (int64_t i = 0; i < t.numel(); ++i) dst[i] = storage == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
  return out;
}
}  // namespace

void save_indexers(const std::string& path, const DsaSpec& spec, int64_t dim, DType storage) {
  IC_CHECK(storage == DType::F32 || storage == DType::F16 || storage == DType::BF16,
           "save_indexers: storage type {} is not one of F32, F16, BF16", dtype_name(storage));
  safetensors::Writer wr;
  const IndexerConfig& c = spec.config;
  c.validate(dim);
  for (const auto& [k, v] : spec.metadata) wr.set_metadata(k, v);
  wr.set_metadata("indexcache.format", "indexers-v1");
  wr.set_metadata("indexcache.n_layers", std::to_string(spec.n_layers()));
  wr.set_metadata("indexcache.dim", std::to_string(dim));
  wr.set_metadata("indexcache.n_heads", std::to_string(c.n_heads));
  wr.set_metadata("indexcache.head_dim", std::to_string(c.head_dim));
  wr.set_metadata("indexcache.rope_dim", std::to_string(c.rope_dim));
  wr.set_metadata("indexcache.rope_style", std::string(ops::rope_style_name(c.rope_style)));
  wr.set_metadata("indexcache.rope_base", fmt::format("{}", c.rope_base));
  wr.set_metadata("indexcache.norm_eps", fmt::format("{}", c.norm_eps));
  wr.set_metadata("indexcache.topk", std::to_string(c.topk));
  wr.set_metadata("indexcache.pattern", spec.pattern.str());
  IC_CHECK(static_cast<int64_t>(spec.indexers.size()) == spec.n_layers(), "save_indexers: {} indexers for {} layers",
           spec.indexers.size(), spec.n_layers());
  for (int64_t l = 0; l < spec.n_layers(); ++l) {
    if (!spec.pattern.is_full(l)) continue;
    IndexerWeights w = spec.indexers[l];
    w.check(c, dim);
    for (const char* part : kParts) wr.add(tensor_name(l, part), stored_as(*part_of(w, part), storage));
  }
  wr.write(path);
}

}  // namespace ic
