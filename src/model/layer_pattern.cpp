#include "model/layer_pattern.h"

#include "core/error.h"

namespace ic {

LayerPattern::LayerPattern(std::vector<bool> full) : full_(std::move(full)) {
  IC_CHECK(!full_.empty(), "a layer pattern needs at least one layer");
  IC_CHECK(full_[0], "layer pattern {}: the first layer must be F (an S layer needs a preceding F layer to share from)",
           str());
}

LayerPattern LayerPattern::all_full(int64_t n_layers) {
  IC_CHECK(n_layers > 0, "a layer pattern needs at least one layer, got {}", n_layers);
  return LayerPattern(std::vector<bool>(static_cast<size_t>(n_layers), true));
}

LayerPattern LayerPattern::parse(std::string_view letters, int64_t n_layers) {
  std::vector<bool> full;
  for (size_t i = 0; i < letters.size(); ++i) {
    const char c = letters[i];
    if (c == ' ' || c == '_') continue;
    IC_CHECK(c == 'F' || c == 'f' || c == 'S' || c == 's',
             "layer pattern '{}': character {} is '{}', only F (full) and S (shared) are allowed", letters, i, c);
    full.push_back(c == 'F' || c == 'f');
  }
  IC_CHECK(static_cast<int64_t>(full.size()) == n_layers,
           "layer pattern '{}' has {} layers but the model has {}", letters, full.size(), n_layers);
  IC_CHECK(full[0], "layer pattern '{}': the first layer must be F (an S layer needs a preceding F layer)", letters);
  return LayerPattern(std::move(full));
}

LayerPattern LayerPattern::from_freq(int64_t n_layers, int64_t freq, int64_t offset) {
  IC_CHECK(n_layers > 0, "a layer pattern needs at least one layer, got {}", n_layers);
  IC_CHECK(freq >= 1, "index frequency must be >= 1, got {}", freq);
  IC_CHECK(offset >= 1, "index offset must be >= 1 (layer 0 is always F), got {}", offset);
  std::vector<bool> full(static_cast<size_t>(n_layers));
  for (int64_t l = 0; l < n_layers; ++l) full[l] = l < offset || (l - offset + 1) % freq == 0;
  return LayerPattern(std::move(full));
}

LayerPattern LayerPattern::from_indexer_types(const std::vector<std::string>& types, int64_t n_layers) {
  IC_CHECK(static_cast<int64_t>(types.size()) == n_layers, "indexer_types lists {} layers but the model has {}",
           types.size(), n_layers);
  std::vector<bool> full;
  for (size_t i = 0; i < types.size(); ++i) {
    IC_CHECK(types[i] == "full" || types[i] == "shared",
             "indexer_types[{}] is '{}', expected \"full\" or \"shared\"", i, types[i]);
    full.push_back(types[i] == "full");
  }
  IC_CHECK(full[0], "indexer_types[0] must be \"full\" (a shared layer needs a preceding full layer)");
  return LayerPattern(std::move(full));
}

LayerPattern LayerPattern::from_flags(std::vector<bool> full) { return LayerPattern(std::move(full)); }

bool LayerPattern::is_full(int64_t layer) const {
  IC_CHECK(layer >= 0 && layer < n_layers(), "layer {} outside the pattern's {} layers", layer, n_layers());
  return full_[layer];
}

int64_t LayerPattern::source(int64_t layer) const {
  IC_CHECK(layer >= 0 && layer < n_layers(), "layer {} outside the pattern's {} layers", layer, n_layers());
  while (!full_[layer]) --layer;  // layer 0 is F, so this stops
  return layer;
}

int64_t LayerPattern::n_full() const {
  int64_t n = 0;
  for (bool f : full_) n += f;
  return n;
}

std::vector<int64_t> LayerPattern::full_layers() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < n_layers(); ++l)
    if (full_[l]) out.push_back(l);
  return out;
}

std::string LayerPattern::str() const {
  std::string s;
  for (bool f : full_) s += f ? 'F' : 'S';
  return s;
}

void LayerPattern::check_stage_starts(const std::vector<int64_t>& first_layers) const {
  for (int64_t l : first_layers)
    IC_CHECK(is_full(l), "pipeline stage starting at layer {} begins with an S layer in pattern {}; each stage "
             "must start with an F layer", l, str());
}

}  // namespace ic
