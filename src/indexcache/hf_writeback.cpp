#include "indexcache/hf_writeback.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include <fmt/ranges.h>

#include "core/dtype.h"
#include "core/error.h"
#include "indexcache/pattern_export.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace ic {

namespace fs = std::filesystem;

namespace {

constexpr const char* kShard = "model-indexcache-indexers.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";
const char* kFields[] = {"wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight"};

const Tensor& field_of(const dsa::IndexerWeights& w, int i) {
  const Tensor* ts[] = {&w.wq_b, &w.wk, &w.k_norm, &w.k_bias, &w.weights_proj};
  return *ts[i];
}

nlohmann::json read_json(const fs::path& p) {
  try {
    return nlohmann::json::parse(read_file_bounded(p.string(), int64_t{64} << 20));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", p.string(), e.what());
  }
}

void write_text_atomic(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    IC_CHECK(f.good(), "{}: could not write", tmp.string());
  }
  fs::rename(tmp, p);
}

void link_or_copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (ec) fs::copy_file(from, to);
}

// The tensor as `dtype` (F32, F16 or BF16) for the writer.
Tensor as_dtype(const Tensor& t, const std::string& dtype, const std::string& name) {
  IC_CHECK(t.dtype() == DType::F32, "write-back: {} must be F32", name);
  if (dtype == "F32") return t;
  Tensor out = Tensor::empty(t.shape(), dtype == "BF16" ? DType::BF16 : DType::F16);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = t.data<float>()[i];
    out.data<uint16_t>()[i] = dtype == "BF16" ? f32_to_bf16(v) : f32_to_f16(v);
  }
  return out;
}

}  // namespace

std::string hf_indexer_name(int64_t layer, const std::string& field) {
  return "model.layers." + std::to_string(layer) + ".self_attn.indexer." + field;
}

WritebackReport write_indexers_hf(const std::string& src_dir, const std::string& out_dir,
                                  const std::map<int64_t, dsa::IndexerWeights>& trained, const LayerPattern& pattern) {
  const fs::path src(src_dir), out(out_dir);
  IC_CHECK(fs::is_directory(src), "write-back: {} is not a folder", src_dir);
  IC_CHECK(!fs::exists(out), "write-back: {} exists (give a new folder)", out_dir);
  IC_CHECK(!trained.empty(), "write-back: no trained indexers");
  const bool sharded = fs::exists(src / kIndex);
  IC_CHECK(sharded || fs::exists(src / "model.safetensors"), "write-back: {} has neither {} nor model.safetensors",
           src_dir, kIndex);

  // Every tensor's shard and dtype.
  std::map<std::string, std::string> shard_of;
  std::map<std::string, safetensors::File> files;
  nlohmann::json index;
  if (sharded) {
    index = read_json(src / kIndex);
    IC_CHECK(index.contains("weight_map") && index["weight_map"].is_object(), "{}: no weight_map object",
             (src / kIndex).string());
    for (auto& [name, file] : index["weight_map"].items()) {
      IC_CHECK(file.is_string(), "{}: weight_map[\"{}\"] is not a file name", (src / kIndex).string(), name);
      shard_of[name] = file.get<std::string>();
    }
  }
  std::set<std::string> shard_names;
  for (const auto& [n, f] : shard_of) shard_names.insert(f);
  if (!sharded) shard_names.insert("model.safetensors");
  for (const std::string& s : shard_names) {
    files.emplace(s, safetensors::File::open((src / s).string()));
    if (!sharded)
      for (const safetensors::TensorInfo& t : files.at(s).tensors()) shard_of[t.name] = s;
  }
  auto dtype_of = [&](const std::string& name) -> const safetensors::TensorInfo* {
    auto it = shard_of.find(name);
    return it == shard_of.end() ? nullptr : files.at(it->second).find(name);
  };

  // The new shard.
  WritebackReport rep;
  rep.shard = kShard;
  safetensors::Writer w;
  w.set_metadata("format", "pt");
  std::set<std::string> replaced;
  std::vector<Tensor> keep;  // the writer holds references
  for (const auto& [l, iw] : trained) {
    IC_CHECK(l >= 0 && l < pattern.n_layers(), "write-back: layer {} outside the pattern's {} layers", l,
             pattern.n_layers());
    for (int i = 0; i < 5; ++i) {
      const std::string name = hf_indexer_name(l, kFields[i]);
      std::string dtype;
      if (const safetensors::TensorInfo* info = dtype_of(name)) {
        dtype = info->dtype_name;
        const Shape& sh = field_of(iw, i).shape();
        IC_CHECK(info->dims == std::vector<int64_t>(sh.dims.begin(), sh.dims.begin() + sh.rank),
                 "write-back: {} is {} in {} but the trained tensor is {}", name, fmt::format("{}", fmt::join(info->dims, "x")),
                 src_dir, field_of(iw, i).desc());
      } else {
        for (int64_t o = 0; o < pattern.n_layers() && dtype.empty(); ++o)
          if (const safetensors::TensorInfo* info = dtype_of(hf_indexer_name(o, kFields[i]))) dtype = info->dtype_name;
        if (dtype.empty()) dtype = "BF16";
      }
      IC_CHECK(dtype == "F32" || dtype == "BF16" || dtype == "F16",
               "write-back: {} is stored as {} in {}; writing trained weights back in that type (re-quantising) is "
               "not implemented", name, dtype, src_dir);
      IC_CHECK(!dtype_of(name + "_scale_inv"), "write-back: {} has a block scale {}_scale_inv in {}; fp8 write-back is "
               "not implemented", name, name, src_dir);
      keep.push_back(as_dtype(field_of(iw, i), dtype, name));
      w.add(name, keep.back());
      replaced.insert(name);
      rep.dtypes[name] = dtype;
      ++rep.tensors;
    }
  }

  // The S layers' indexer tensors: no module of HF's takes them under the pattern (HF reports them as
  // unexpected keys; its own save of such a model has none), so they are left out.
  std::set<std::string> dropped;
  for (int64_t l = 0; l < pattern.n_layers(); ++l)
    if (!pattern.is_full(l))
      for (const char* f : kFields)
        if (shard_of.count(hf_indexer_name(l, f))) dropped.insert(hf_indexer_name(l, f));
  rep.dropped = static_cast<int64_t>(dropped.size());
  auto skipped = [&](const std::string& name) { return replaced.count(name) > 0 || dropped.count(name) > 0; };

  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    w.write((tmp / kShard).string());
    // Source shards: rewritten without the replaced names where they held one.
    for (const std::string& s : shard_names) {
      const safetensors::File& f = files.at(s);
      bool holds = false;
      for (const safetensors::TensorInfo& t : f.tensors()) holds |= skipped(t.name);
      const std::string dst = sharded ? s : "model-base.safetensors";
      if (!holds && sharded) {
        link_or_copy(src / s, tmp / dst);
        continue;
      }
      safetensors::Writer r;
      for (const auto& [k, v] : f.metadata()) r.set_metadata(k, v);
      for (const safetensors::TensorInfo& t : f.tensors())
        if (!skipped(t.name)) r.add_raw(t.name, t.dtype_name, t.dims, t.data, t.nbytes);
      r.write((tmp / dst).string());
      if (holds) rep.rewritten.push_back(s);
    }
    // The index.
    if (!sharded) {
      index = nlohmann::json::object();
      index["metadata"] = nlohmann::json::object();
      index["weight_map"] = nlohmann::json::object();
      for (const auto& [name, s] : shard_of) index["weight_map"][name] = "model-base.safetensors";
    }
    for (const std::string& name : dropped) index["weight_map"].erase(name);
    for (const std::string& name : replaced) index["weight_map"][name] = kShard;
    int64_t total = 0;
    for (const auto& e : fs::directory_iterator(tmp))
      if (e.path().extension() == ".safetensors") total += static_cast<int64_t>(fs::file_size(e.path()));
    index["metadata"]["total_size"] = total;  // file bytes (headers included): an upper bound HF only reports
    write_text_atomic(tmp / kIndex, index.dump(2) + "\n");
    // config.json with the pattern.
    nlohmann::json cfg = read_json(src / "config.json");
    for (const char* k : {"indexer_types", "index_topk_pattern", "index_topk_freq", "index_skip_topk_offset"}) cfg.erase(k);
    const PatternExport x = export_pattern(pattern, Engine::HF);
    const nlohmann::json fields = nlohmann::json::parse(x.json);
    for (auto& [k, v] : fields.items()) cfg[k] = v;
    write_text_atomic(tmp / "config.json", cfg.dump(2) + "\n");
    // Everything else.
    for (const auto& e : fs::directory_iterator(src)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name == "config.json" || name == kIndex || shard_names.count(name)) continue;
      link_or_copy(e.path(), tmp / name);
    }
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  return rep;
}

}  // namespace ic
