#pragma once
// Training-free IndexCache: the greedy layer-pattern search (the paper's Algorithm 1).
// Start with an indexer on every layer (all F). Each step, flip every current F layer but layer 0
// to S in turn, measure the mean LM loss (NLL of every predicted token of every calibration
// window) and commit the flip with the lowest loss (ties: the lower layer). The trajectory is
// nested: each retention's pattern contains the next smaller one's F layers.
//
// Exact and fast: flipping layer j leaves layers < j untouched, so the search caches, per
// window, the residual stream entering every layer and the top-k of every F layer under the
// committed pattern, and evaluates candidate j from layer j on only (docs/SEARCH.md).
// greedy_search_reference does the same search with plain full forward passes; the two agree
// bit for bit (tests/test_search.cpp).
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/layer_pattern.h"
#include "model/model.h"

namespace ic {

struct SearchConfig {
  int64_t keep = 0;     // F layers left at the end, in [1, N]; 0: keep_count(N, 8) (1/8)
  // Options that may change the answer (off by default):
  bool lazy = false;    // lazy greedy: re-evaluate in order of the previous step's loss and commit
                        // once a fresh loss is no worse than the best stale loss of the rest
  int64_t blocks = 1;   // P > 1: P contiguous blocks whose first layers stay F; each step flips the
                        // best candidate of every block (the paper's pipeline-parallel variant)
  // Work sizes (never change the answer):
  int64_t chunk = 512;      // tokens per forward_layers call; LlamaModel::forward uses 512
  int64_t logit_rows = 64;  // rows of [rows, vocab] logits computed at once
};

// ceil(n_layers / denominator): 30 layers keep 15, 8, 4 at 1/2, 1/4, 1/8 (the uniform
// freq-2/4/8 counts).
int64_t keep_count(int64_t n_layers, int64_t denominator);

// The layers of `config.blocks` contiguous blocks: block b starts at floor(b * N / P).
std::vector<int64_t> block_starts(int64_t n_layers, int64_t blocks);

// One committed flip.
struct SearchStep {
  int64_t step = 0;          // 1-based search step (with blocks, several flips share a step)
  int64_t layer = 0;         // the layer flipped to S
  double loss = 0.0;         // mean NLL of `pattern`, measured
  double candidate_loss = 0.0;  // the flip's loss as a candidate (== loss unless blocks > 1)
  int64_t evaluated = 0;     // candidates evaluated in this step
  LayerPattern pattern;      // the pattern after this flip
  // (layer, loss) of every candidate evaluated in this step, in evaluation order; with blocks,
  // only on the step's first flip.
  std::vector<std::pair<int64_t, double>> candidates;
};

struct SearchCost {
  // Layer evaluations: one layer over one window (all its chunks).
  int64_t layer_evals = 0;        // done by this search (candidates, cache fills and refreshes)
  int64_t head_evals = 0;         // output head over one window
  int64_t candidates = 0;         // candidate losses computed
  // The same candidates evaluated with full forward passes (plus the all-F pass), windows included:
  // naive_passes * n_layers * windows layer evaluations.
  int64_t naive_passes = 0;
  int64_t naive_layer_evals = 0;
  int64_t refresh_mismatches = 0; // committed losses that differed from their candidate's (exact mode)
  double seconds = 0.0;
  double cache_bytes = 0.0;       // residual streams and selections held
};

struct SearchResult {
  int64_t n_layers = 0;
  double all_f_loss = 0.0;
  std::vector<SearchStep> trajectory;
  SearchCost cost;
  // The pattern with n_full F layers on the trajectory; fails if the search stopped before it.
  LayerPattern pattern_with(int64_t n_full) const;
};

struct SearchProgress {
  int64_t step = 0, total_steps = 0;  // flips committed so far (step counts flips), to commit
  int64_t candidate = 0, n_candidates = 0;  // within the current step
  int64_t layer_evals = 0;            // done so far
  int64_t layer_evals_estimate = 0;   // projected total (for an ETA)
  double seconds = 0.0;
  double best_loss = 0.0;             // best candidate loss of this step so far
};
using SearchProgressFn = std::function<void(const SearchProgress&)>;

// The search on `model`, whose DSA spec must have indexers on every layer (all F), over
// `windows` (each at least 2 tokens, at most the model's context). The model's spec is left as
// it was. Throws ic::Error on an empty window set, a spec that is not all-F, keep outside
// [1, N] (or below the block count), and bad options.
SearchResult greedy_search(Model& model, const std::vector<std::vector<int32_t>>& windows,
                           const SearchConfig& config, const SearchProgressFn& progress = nullptr);

// The plain reference: the same search, every candidate scored by model.forward passes with
// set_dsa(pattern). Slow (N^2/2 full passes); for tests. Only the exact search (no lazy, blocks).
SearchResult greedy_search_reference(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                     int64_t keep);

// Mean NLL over every predicted token of `windows` by plain model.forward passes, with the model
// as it is (dense without a spec).
double mean_window_nll(Model& model, const std::vector<std::vector<int32_t>>& windows);

// The same with the model's spec switched to `pattern` for the call (its F layers need indexer
// weights), restored afterwards.
double pattern_nll(Model& model, const std::vector<std::vector<int32_t>>& windows, const LayerPattern& pattern);

}  // namespace ic
