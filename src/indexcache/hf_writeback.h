#pragma once
// Writing trained indexers back into an HF checkpoint of the DSA family (docs/DISTILL.md,
// "Write-back"), so that HF transformers (and every engine reading the folder) loads them:
//   out/ is the source folder with
//   - model-indexcache-indexers.safetensors: the trained layers' indexer tensors under HF's own
//     names, model.layers.<l>.self_attn.indexer.{wq_b.weight, wk.weight, k_norm.weight,
//     k_norm.bias, weights_proj.weight}, each in the dtype the checkpoint stores that tensor in
//     (the same name's, else the same tensor of another layer's; BF16 when none has it);
//   - the pattern's S layers' indexer tensors left out (HF's shared layers have no indexer
//     module: it would report them as unexpected keys, and its own save has none);
//   - every source shard that held one of those names rewritten without them (the others, and
//     every other file, hard-linked, or copied where the file system cannot link);
//   - model.safetensors.index.json mapping the new names to the new shard (a single-file source
//     becomes model-base.safetensors + the new shard + an index, since HF prefers a
//     model.safetensors over an index);
//   - config.json with the pattern in the HF convention (pattern_export.h's HF fields,
//     replacing any IndexCache knobs it had).
// Atomic: everything is written under out.tmp.<pid>, then renamed to out. fp8-quantised indexer
// tensors are refused (re-quantising is not implemented). out must not exist.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/dsa_family/weights.h"
#include "model/layer_pattern.h"

namespace ic {

struct WritebackReport {
  std::string shard;                   // the new shard's file name
  std::vector<std::string> rewritten;  // source shards rewritten without the replaced tensors
  int64_t tensors = 0;                 // tensors written to the new shard
  int64_t dropped = 0;                 // S layers' indexer tensors left out
  std::map<std::string, std::string> dtypes;  // tensor name -> dtype written
};

// HF's name of one of a layer's indexer tensors: field in wq_b.weight, wk.weight, k_norm.weight,
// k_norm.bias, weights_proj.weight.
std::string hf_indexer_name(int64_t layer, const std::string& field);

WritebackReport write_indexers_hf(const std::string& src_dir, const std::string& out_dir,
                                  const std::map<int64_t, dsa::IndexerWeights>& trained, const LayerPattern& pattern);

}  // namespace ic
