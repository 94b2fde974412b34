#pragma once
// The IndexCache paper's Table 1 on one model: for each context length and each layer pattern
// (DSA = all F, IndexCache 1/2, 1/4, ...), the prefill time of one sequence of that length
// (chunked) and the decode speed of one request with that many tokens cached, with the
// indexer's share of prefill and the memory each pattern's cache takes. Token ids are drawn from
// a seed: the figures are timings (on random weights they say nothing of quality).
//
// Prefill runs with the model's phase timing on (the GPU path synchronises around the indexer
// and attention, so ForwardStats splits the time; at chunk sizes of thousands of tokens that
// costs microseconds per layer against milliseconds of work); decode runs with it off, so the
// device is never waited on inside a step beyond what the path itself does. A few more decode
// steps after the timed ones run with phase timing on, to split a decode step into indexer,
// attention and the rest (those steps are synchronised, so they are reported apart).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/layer_pattern.h"
#include "model/model.h"

namespace ic {

struct Table1Config {
  std::string name;     // "DSA", "1/2", "1/4", or a given name
  LayerPattern pattern;
};

// "dsa" (all F), "1/N" (LayerPattern::from_freq(n, N): F on layer 0 and every N-th after it),
// or "NAME=FSSF..." (an explicit pattern).
Table1Config parse_table1_config(const std::string& spec, int64_t n_layers);

struct Table1Options {
  std::vector<int64_t> lengths{10000, 60000, 120000, 200000};
  int64_t decode_steps = 32;  // timed decode steps after each prefill
  int64_t chunk = 8192;       // prefill tokens per forward call
  uint64_t seed = 1;          // the token ids
  std::function<void(const std::string& line)> progress;  // one line per step of the run
};

// Phase-timed decode steps after the timed ones (Table1Row::decode_split_ms and its parts).
inline constexpr int64_t kTable1SplitSteps = 5;

struct Table1Row {
  std::string config, pattern;
  int64_t context = 0;
  int64_t f_layers = 0;
  double prefill_s = 0.0;      // wall seconds for `context` tokens (chunked), device synchronised
  double indexer_s = 0.0;      // of which the indexer (F layers' projections, scores, top-k)
  double attention_s = 0.0;    // of which sparse attention
  double decode_ms = 0.0;      // per token, median over the timed steps
  double decode_min_ms = 0.0, decode_max_ms = 0.0;
  double decode_split_ms = 0.0;      // a phase-timed decode step (median), device synchronised
  double decode_indexer_ms = 0.0;    // of which the indexer, in the same steps
  double decode_attention_ms = 0.0;  // of which sparse attention
  int64_t cache_bytes = 0;     // the cache of context + decode_steps tokens
  int64_t index_cache_bytes = 0;  // of which indexer keys
  bool finite = true;          // the last prefill logits and every decode logit finite
  double decode_tok_s() const { return decode_ms > 0 ? 1000.0 / decode_ms : 0.0; }
};

struct Table1Result {
  std::string model;
  std::string device;
  int64_t weight_bytes = 0;
  int64_t chunk = 0, decode_steps = 0;
  int64_t split_steps = 0;  // phase-timed decode steps after the timed ones
  std::vector<Table1Row> rows;  // length-major, configs in the order given
};

Table1Result run_table1(Model& m, const std::vector<Table1Config>& configs, const Table1Options& opt);

// A Markdown table with the speed-ups over the first config at each length.
std::string table1_markdown(const Table1Result& r);
std::string table1_json(const Table1Result& r);  // pretty-printed
// Prefill seconds and decode tokens/s against context, one series per config.
std::string table1_prefill_svg(const Table1Result& r);
std::string table1_decode_svg(const Table1Result& r);

}  // namespace ic
