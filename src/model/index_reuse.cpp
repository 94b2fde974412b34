#include "model/index_reuse.h"

#include "core/error.h"

namespace ic {

IndexReuse::IndexReuse(LayerPattern pattern) : pattern_(std::move(pattern)) {}

const LayerPattern& IndexReuse::pattern() const {
  IC_CHECK(pattern_, "IndexReuse: a dense run has no layer pattern");
  return *pattern_;
}

bool IndexReuse::runs_indexer(int64_t layer) const { return pattern_ && pattern_->is_full(layer); }

int64_t IndexReuse::source(int64_t layer) const { return pattern().source(layer); }

void IndexReuse::publish(int64_t layer, Tensor topk) {
  IC_CHECK(pattern().is_full(layer), "IndexReuse: layer {} is S in pattern {}; only F layers publish a selection",
           layer, pattern_->str());
  IC_CHECK(topk.defined() && topk.rank() == 2 && topk.dtype() == DType::I32,
           "IndexReuse: layer {} published {}, an I32 [n, k] selection expected", layer,
           topk.defined() ? topk.desc() : std::string("nothing"));
  held_layer_ = layer;
  held_ = std::move(topk);
}

const Tensor& IndexReuse::selection(int64_t layer) const {
  const int64_t src = source(layer);
  IC_CHECK(held_layer_ == src,
           "IndexReuse: layer {} attends over the selection of F layer {} (pattern {}), but {}", layer, src,
           pattern_->str(),
           held_layer_ < 0 ? std::string("no selection was published or provided")
                           : fmt::format("the selection held is layer {}'s", held_layer_));
  return held_;
}

}  // namespace ic
