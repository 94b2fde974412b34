#pragma once
// IndexCache's one mechanism, as an object every architecture's layer loop calls: it owns the
// layer pattern and the selection handed from Full (F) layers to the Shared (S) layers after
// them. It decides who runs an indexer (runs_indexer), takes each F layer's top-k (publish) and
// serves every layer the selection it attends over (selection): its own on an F layer, the
// nearest preceding F layer's on an S layer. No other code applies the F/S rule.
//
// Layers are visited in increasing order within a forward, so only the latest F layer's
// selection is ever needed: the object holds that one (I32 [n, k] on the model's device),
// never one per layer.
#include <cstdint>
#include <optional>

#include "core/tensor.h"
#include "model/layer_pattern.h"

namespace ic {

class IndexReuse {
 public:
  IndexReuse() = default;  // dense: no layer selects, every layer attends to all tokens
  explicit IndexReuse(LayerPattern pattern);

  bool sparse() const { return pattern_.has_value(); }
  const LayerPattern& pattern() const;  // throws when dense
  // True on F layers: run the indexer, then publish its selection. False on S layers and when dense.
  bool runs_indexer(int64_t layer) const;
  // The F layer whose selection `layer` attends over (itself on F layers).
  int64_t source(int64_t layer) const;

  // F layer `layer` hands on its selection (I32 [n, k]).
  void publish(int64_t layer, Tensor topk);
  // A selection computed earlier for F layer `source_layer` (a search candidate starting at an S
  // layer resumes from the cached selection of the F layer before it). Same as publish, for a
  // layer the current call does not run.
  void provide(int64_t source_layer, Tensor topk) { publish(source_layer, std::move(topk)); }
  // The selection `layer` attends over. Throws ic::Error when its source F layer's selection has
  // not been published or provided (an S layer at the start of a range needs provide()).
  const Tensor& selection(int64_t layer) const;
  // The latest published selection and its layer (-1 and undefined when none).
  int64_t held_layer() const { return held_layer_; }
  const Tensor& held() const { return held_; }

 private:
  std::optional<LayerPattern> pattern_;
  int64_t held_layer_ = -1;
  Tensor held_;
};

}  // namespace ic
