#pragma once
// IndexCache layer patterns: a string over {F, S}, one letter per layer. Full (F) layers run their
// own lightning indexer; Shared (S) layers run none and reuse the top-k of the nearest preceding F
// layer. Layer 0 is always F (nothing precedes it to share from).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ic {

class LayerPattern {
 public:
  LayerPattern() = default;
  static LayerPattern all_full(int64_t n_layers);
  // "FSSF..." with exactly n_layers letters (case-insensitive; spaces and '_' ignored).
  static LayerPattern parse(std::string_view letters, int64_t n_layers);
  // The index_topk_freq / index_skip_topk_offset convention: the first `offset` layers are F,
  // then every freq-th layer, counted so that layer offset-1+freq is the next F. With offset 1,
  // freq 4 gives FSSSFSSS...; GLM-5.2's freq 4, offset 3 over 78 layers gives F at
  // 0, 1, 2, 6, 10, ..., 74 (21 layers).
  static LayerPattern from_freq(int64_t n_layers, int64_t freq, int64_t offset = 1);
  // GLM-5.2 style config list: "full" / "shared" per layer.
  static LayerPattern from_indexer_types(const std::vector<std::string>& types, int64_t n_layers);
  // One flag per layer (true = F); the first must be true.
  static LayerPattern from_flags(std::vector<bool> full);

  int64_t n_layers() const { return static_cast<int64_t>(full_.size()); }
  bool is_full(int64_t layer) const;
  // The F layer whose top-k `layer` uses: itself if F, else the nearest preceding F layer.
  int64_t source(int64_t layer) const;
  int64_t n_full() const;
  std::vector<int64_t> full_layers() const;
  std::string str() const;  // "FSSF..."
  // Fails with a clear error unless every pipeline stage starts on an F layer.
  void check_stage_starts(const std::vector<int64_t>& first_layers) const;
  bool operator==(const LayerPattern& o) const { return full_ == o.full_; }

 private:
  explicit LayerPattern(std::vector<bool> full);
  std::vector<bool> full_;
};

}  // namespace ic
