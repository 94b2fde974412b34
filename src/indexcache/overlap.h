#pragma once
// How much layers agree on what to attend to: the Jaccard overlap |A ∩ B| / |A ∪ B| of the top-k
// sets two layers' indexers select for the same query, averaged over query positions. It is the
// "similarity matrix" the paper's DP baseline is built on (INDEXCACHE.md), and a map of which
// layers could share an indexer.
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace ic {

class Model;

// Jaccard overlap of two index sets; entries < 0 ("no token") are ignored, duplicates count
// once. 1 when both are empty.
double jaccard(std::span<const int32_t> a, std::span<const int32_t> b);

// Runs `tokens` from position 0 through the model (which must have a DSA spec) and returns each
// layer's selection, I32 [n, k] on the host (an S layer's is its source F layer's). The model's
// tensor callback is replaced for the call and cleared afterwards.
std::vector<Tensor> capture_topk(Model& model, std::span<const int32_t> tokens);

struct OverlapMatrix {
  int64_t n_layers = 0;
  int64_t rows = 0;             // query positions averaged over
  int64_t min_position = 0;     // the first of them
  std::vector<double> jaccard;  // [n_layers * n_layers], symmetric, 1 on the diagonal
  double at(int64_t a, int64_t b) const { return jaccard[a * n_layers + b]; }
};

// Mean Jaccard overlap, for every pair of layers, of their selections (I32 [n, k] each, same
// shape) over the query rows min_position .. n-1. Throws ic::Error when there is no such row.
OverlapMatrix layer_overlap(const std::vector<Tensor>& topk, int64_t min_position);

}  // namespace ic
