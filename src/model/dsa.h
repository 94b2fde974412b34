#pragma once
// A dense model turned into a DSA model: lightning indexers on the Full (F) layers of a layer
// pattern; Shared (S) layers run none and reuse the nearest preceding F layer's top-k.
//
// Indexer file (safetensors, written atomically): tensors "blk.<l>.indexer.{wq,wk,k_norm,k_bias,wproj}"
// for every layer that has an indexer, and string metadata:
//   indexcache.format = "indexers-v1", indexcache.n_layers, indexcache.dim, indexcache.n_heads,
//   indexcache.head_dim, indexcache.rope_dim, indexcache.rope_style, indexcache.rope_base,
//   indexcache.norm_eps, indexcache.topk, indexcache.pattern (the pattern it was trained for),
//   indexcache.recipe and indexcache.data (free text: how and on what it was trained).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/layer_pattern.h"
#include "model/indexer.h"

namespace ic {

// The indexer key cache's element type: f32 on the CPU (its selection runs in f32), bf16 on the
// GPU (its kernels' type). KVCache allocates with it; the memory reports count with it.
inline DType indexer_key_dtype(Device device) { return device == Device::CPU ? DType::F32 : DType::BF16; }

struct DsaSpec {
  IndexerConfig config;
  LayerPattern pattern;                  // the pattern this run uses
  std::vector<IndexerWeights> indexers;  // [n_layers]; undefined tensors on S layers
  std::map<std::string, std::string> metadata;

  int64_t n_layers() const { return pattern.n_layers(); }
  // Bytes of indexer key cache per token (F layers only) on `device`, in indexer_key_dtype, and
  // indexer weights loaded.
  int64_t key_cache_bytes_per_token(Device device = Device::CPU) const;
  int64_t weight_bytes() const;
};

// Load indexers for a model of n_layers x dim. `pattern` overrides the file's own; every F layer
// of the pattern must have weights in the file, and S layers load nothing. `topk` overrides the
// file's k. Errors name the file and what is missing or inconsistent.
DsaSpec load_indexers(const std::string& path, int64_t n_layers, int64_t dim,
                      const std::optional<LayerPattern>& pattern = std::nullopt,
                      std::optional<int64_t> topk = std::nullopt);

// Write the F layers' indexers of `spec` (atomically) with its config, pattern and metadata.
// `storage` rounds the F32 weights to F16 or BF16 in the file (half the size; loading converts
// back to F32); the trainer's checkpoints keep F32 masters regardless.
void save_indexers(const std::string& path, const DsaSpec& spec, int64_t dim, DType storage = DType::F32);

}  // namespace ic
