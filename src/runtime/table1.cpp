#include "runtime/table1.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "io/svg.h"

namespace ic {

namespace {

using Clock = std::chrono::steady_clock;

void wait_for(const Model& m) {
  if (m.device() == Device::CUDA) cuda::synchronize();
}

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Token ids of a run: splitmix64 of (seed, position), uniform over the vocabulary.
std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i) + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    t[static_cast<size_t>(i)] = static_cast<int32_t>((z ^ (z >> 31)) % static_cast<uint64_t>(vocab));
  }
  return t;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// One forward of tokens [p0, p0 + n) through every layer; the logits of the last row into `logits`.
void step(Model& m, ModelCache& cache, std::span<const int32_t> tokens, int64_t p0, std::vector<float>& logits) {
  Tensor x = m.embed(tokens);
  if (m.device() != Device::CPU) x = x.to(m.device());
  IndexReuse reuse = m.make_reuse();
  m.forward_layers(0, m.info().n_layers, x, cache, p0, reuse);
  const int64_t n = static_cast<int64_t>(tokens.size());
  cache.set_size(p0 + n);
  m.output_logits(x.slice_rows(n - 1, n), logits.data());
}

void prefill(Model& m, ModelCache& cache, std::span<const int32_t> tokens, int64_t chunk, std::vector<float>& logits,
             const std::function<void(int64_t)>& done) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t c1 = std::min(n, c0 + chunk);
    step(m, cache, tokens.subspan(static_cast<size_t>(c0), static_cast<size_t>(c1 - c0)), c0, logits);
    if (done) done(c1);
  }
}

Table1Row measure(Model& m, const Table1Config& cfg, int64_t len, const std::vector<int32_t>& tokens,
                  const Table1Options& opt) {
  Table1Row row;
  row.config = cfg.name;
  row.pattern = cfg.pattern.str();
  row.context = len;
  row.f_layers = static_cast<int64_t>(cfg.pattern.full_layers().size());
  std::vector<float> logits(static_cast<size_t>(m.info().vocab));
  const int64_t split_steps = opt.decode_steps > 0 ? kTable1SplitSteps : 0;
  std::unique_ptr<ModelCache> cache = m.make_cache(len + opt.decode_steps + split_steps + 1);
  row.cache_bytes = cache->bytes();
  row.index_cache_bytes = cache->index_bytes();

  m.set_phase_timing(true);
  m.reset_stats();
  wait_for(m);
  const auto t0 = Clock::now();
  const std::span<const int32_t> prompt(tokens.data(), static_cast<size_t>(len));
  prefill(m, *cache, prompt, opt.chunk, logits, [&](int64_t done) {
    if (opt.progress && (done == len || done % (opt.chunk * 4) == 0)) {
      const double s = since(t0);
      opt.progress(fmt::format("  {} @ {}: prefill {}/{} tokens, {:.0f} tokens/s, ETA {:.1f} s", cfg.name, len, done,
                               len, done / s, (len - done) / std::max(done / s, 1e-9)));
    }
  });
  wait_for(m);
  row.prefill_s = since(t0);
  row.indexer_s = m.stats().indexer;
  row.attention_s = m.stats().attention;
  row.finite = all_finite(logits);
  m.set_phase_timing(false);

  std::vector<double> ms;
  for (int64_t i = 0; i <= opt.decode_steps; ++i) {
    const int32_t tok = tokens[static_cast<size_t>(len + i)];
    const auto ts = Clock::now();
    step(m, *cache, std::span<const int32_t>(&tok, 1), len + i, logits);
    wait_for(m);  // output_logits already copied the logits to the host; this only makes it explicit
    if (i > 0) ms.push_back(since(ts) * 1000.0);  // step 0 warms the decode shapes' plans
    row.finite = row.finite && all_finite(logits);
  }
  if (!ms.empty()) {
    std::sort(ms.begin(), ms.end());
    row.decode_ms = ms[ms.size() / 2];
    row.decode_min_ms = ms.front();
    row.decode_max_ms = ms.back();
  }

  // The split of a decode step: phase timing on, each step's total and parts; the step of median
  // total gives the three figures (one step's parts, so they add up).
  struct Split {
    double total, indexer, attention;
  };
  std::vector<Split> split;
  m.set_phase_timing(true);
  for (int64_t i = 0; i < split_steps; ++i) {
    const int64_t pos = len + opt.decode_steps + 1 + i;
    const int32_t tok = tokens[static_cast<size_t>(pos)];
    m.reset_stats();
    wait_for(m);
    const auto ts = Clock::now();
    step(m, *cache, std::span<const int32_t>(&tok, 1), pos, logits);
    wait_for(m);
    split.push_back({since(ts) * 1000.0, m.stats().indexer * 1000.0, m.stats().attention * 1000.0});
    row.finite = row.finite && all_finite(logits);
  }
  m.set_phase_timing(false);
  if (!split.empty()) {
    std::sort(split.begin(), split.end(), [](const Split& a, const Split& b) { return a.total < b.total; });
    const Split& mid = split[split.size() / 2];
    row.decode_split_ms = mid.total;
    row.decode_indexer_ms = mid.indexer;
    row.decode_attention_ms = mid.attention;
  }
  return row;
}

std::string human_bytes(int64_t b) {
  if (b >= (int64_t{1} << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1 << 30));
  return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20));
}

// The row of the first config at the same length: the baseline of the speed-ups.
const Table1Row* baseline(const Table1Result& r, const Table1Row& row) {
  for (const Table1Row& b : r.rows)
    if (b.context == row.context) return &b;
  return nullptr;
}

}  // namespace

Table1Config parse_table1_config(const std::string& spec, int64_t n_layers) {
  if (spec == "dsa" || spec == "DSA") return {"DSA", LayerPattern::all_full(n_layers)};
  if (spec.size() > 2 && spec.rfind("1/", 0) == 0) {
    int64_t freq = 0;
    try {
      freq = std::stoll(spec.substr(2));
    } catch (const std::exception&) {
      fail("table1 config '{}': expected 1/N with N a whole number", spec);
    }
    IC_CHECK(freq >= 1 && freq <= n_layers, "table1 config '{}': N must be in [1, {}]", spec, n_layers);
    return {spec, LayerPattern::from_freq(n_layers, freq, 1)};
  }
  const size_t eq = spec.find('=');
  IC_CHECK(eq != std::string::npos && eq > 0, "table1 config '{}': expected dsa, 1/N or NAME=PATTERN", spec);
  return {spec.substr(0, eq), LayerPattern::parse(spec.substr(eq + 1), n_layers)};
}

Table1Result run_table1(Model& m, const std::vector<Table1Config>& configs, const Table1Options& opt) {
  IC_CHECK(!configs.empty(), "table1: no configs");
  IC_CHECK(!opt.lengths.empty(), "table1: no lengths");
  IC_CHECK(opt.chunk >= 1 && opt.decode_steps >= 0, "table1: chunk {} and decode steps {}", opt.chunk,
           opt.decode_steps);
  const int64_t longest = *std::max_element(opt.lengths.begin(), opt.lengths.end());
  for (int64_t len : opt.lengths) IC_CHECK(len >= 1, "table1: context {} must be positive", len);
  const int64_t limit = m.info().context_max;
  IC_CHECK(limit <= 0 || longest + opt.decode_steps + kTable1SplitSteps + 1 <= limit,
           "table1: context {} plus {} decode steps exceeds the model's limit of {} positions", longest,
           opt.decode_steps + kTable1SplitSteps + 1, limit);
  Table1Result r;
  r.model = m.path();
  r.device = std::string(device_name(m.device()));
  r.weight_bytes = m.weight_bytes();
  r.chunk = opt.chunk;
  r.decode_steps = opt.decode_steps;
  r.split_steps = opt.decode_steps > 0 ? kTable1SplitSteps : 0;
  const std::vector<int32_t> tokens =
      random_tokens(longest + opt.decode_steps + r.split_steps + 1, m.info().vocab, opt.seed);

  // Warm-up: one chunk and a decode step per config, so that no row pays for first-call setup
  // (cuBLASLt plans, the pool's first allocations).
  for (const Table1Config& c : configs) {
    PatternScope scope(m, c.pattern);
    Table1Options w = opt;
    w.decode_steps = 1;
    w.progress = nullptr;
    measure(m, c, std::min<int64_t>(opt.chunk, longest), tokens, w);
  }
  for (int64_t len : opt.lengths) {
    for (const Table1Config& c : configs) {
      PatternScope scope(m, c.pattern);
      Table1Row row = measure(m, c, len, tokens, opt);
      if (opt.progress)
        opt.progress(fmt::format("{} @ {}: prefill {:.2f} s (indexer {:.2f} s), decode {:.2f} ms/token", c.name, len,
                                 row.prefill_s, row.indexer_s, row.decode_ms));
      r.rows.push_back(std::move(row));
    }
  }
  return r;
}

std::string table1_markdown(const Table1Result& r) {
  std::string s = fmt::format("Model {} on {}, weights {}; prefill in chunks of {} tokens, decode median of {} "
                              "steps.\n\n",
                              r.model, r.device, human_bytes(r.weight_bytes), r.chunk, r.decode_steps);
  s += "| context | config | F layers | prefill s | speed-up | indexer share | decode tok/s | speed-up | decode ms "
       "min-max | decode split ms: indexer / attention / rest | cache | indexer cache | finite |\n";
  s += "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|\n";
  for (const Table1Row& row : r.rows) {
    const Table1Row* b = baseline(r, row);
    s += fmt::format("| {} | {} | {} | {:.3f} | {:.2f}x | {:.0f} % | {:.1f} | {:.2f}x | {:.2f}-{:.2f} | {:.2f} / {:.2f} / "
                     "{:.2f} | {} | {} | {} |\n",
                     row.context, row.config, row.f_layers, row.prefill_s, b->prefill_s / row.prefill_s,
                     100.0 * row.indexer_s / row.prefill_s, row.decode_tok_s(),
                     b->decode_ms > 0 ? b->decode_ms / row.decode_ms : 0.0, row.decode_min_ms, row.decode_max_ms,
                     row.decode_indexer_ms, row.decode_attention_ms,
                     row.decode_split_ms - row.decode_indexer_ms - row.decode_attention_ms,
                     human_bytes(row.cache_bytes), human_bytes(row.index_cache_bytes), row.finite ? "yes" : "NO");
  }
  return s;
}

std::string table1_json(const Table1Result& r) {
  nlohmann::json j;
  j["model"] = r.model;
  j["device"] = r.device;
  j["weight_bytes"] = r.weight_bytes;
  j["chunk"] = r.chunk;
  j["decode_steps"] = r.decode_steps;
  j["decode_split_steps"] = r.split_steps;
  j["weights"] = "random: timings only";
  for (const Table1Row& row : r.rows) {
    const Table1Row* b = baseline(r, row);
    j["rows"].push_back({{"config", row.config},
                         {"pattern", row.pattern},
                         {"context", row.context},
                         {"f_layers", row.f_layers},
                         {"prefill_s", row.prefill_s},
                         {"prefill_speedup", b->prefill_s / row.prefill_s},
                         {"indexer_s", row.indexer_s},
                         {"attention_s", row.attention_s},
                         {"decode_ms", row.decode_ms},
                         {"decode_min_ms", row.decode_min_ms},
                         {"decode_max_ms", row.decode_max_ms},
                         {"decode_tok_s", row.decode_tok_s()},
                         {"decode_speedup", b->decode_ms > 0 ? b->decode_ms / row.decode_ms : 0.0},
                         {"decode_split_ms", row.decode_split_ms},
                         {"decode_indexer_ms", row.decode_indexer_ms},
                         {"decode_attention_ms", row.decode_attention_ms},
                         {"cache_bytes", row.cache_bytes},
                         {"index_cache_bytes", row.index_cache_bytes},
                         {"finite", row.finite}});
  }
  return j.dump(2);
}

namespace {

std::string chart(const Table1Result& r, bool decode) {
  std::map<std::string, svg::Series> by;
  std::vector<std::string> order;
  for (const Table1Row& row : r.rows) {
    if (!by.count(row.config)) order.push_back(row.config);
    svg::Series& s = by[row.config];
    s.name = row.config;
    s.x.push_back(static_cast<double>(row.context) / 1000.0);
    s.y.push_back(decode ? row.decode_tok_s() : row.prefill_s);
  }
  std::vector<svg::Series> series;
  for (const std::string& n : order) series.push_back(by[n]);
  svg::LineChartOptions o;
  o.title = fmt::format("{} on {}: {}", r.model, r.device, decode ? "decode per request" : "prefill");
  o.x_label = "context (K tokens)";
  o.y_label = decode ? "tokens/s" : "seconds";
  return svg::line_chart(series, o);
}

}  // namespace

std::string table1_prefill_svg(const Table1Result& r) { return chart(r, false); }
std::string table1_decode_svg(const Table1Result& r) { return chart(r, true); }

}  // namespace ic
