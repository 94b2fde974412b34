#include "indexcache/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "core/error.h"

namespace ic {

int64_t keep_count(int64_t n_layers, int64_t denominator) {
  IC_CHECK(n_layers > 0 && denominator > 0, "keep_count: {} layers, 1/{}", n_layers, denominator);
  return (n_layers + denominator - 1) / denominator;
}

std::vector<int64_t> block_starts(int64_t n_layers, int64_t blocks) {
  IC_CHECK(blocks >= 1 && blocks <= n_layers, "{} blocks for {} layers: need 1 <= blocks <= layers", blocks,
           n_layers);
  std::vector<int64_t> s;
  for (int64_t b = 0; b < blocks; ++b) s.push_back(b * n_layers / blocks);
  return s;
}

LayerPattern SearchResult::pattern_with(int64_t n_full) const {
  if (n_full == n_layers) return LayerPattern::all_full(n_layers);
  for (const SearchStep& s : trajectory)
    if (s.pattern.n_full() == n_full) return s.pattern;
  fail("the search stopped before reaching {} F layers", n_full);
}

namespace {

using Clock = std::chrono::steady_clock;

LayerPattern with_layer(const LayerPattern& p, int64_t layer, bool full) {
  std::string s = p.str();
  s[static_cast<size_t>(layer)] = full ? 'F' : 'S';
  return LayerPattern::parse(s, p.n_layers());
}

void check_windows(const Model& model, const std::vector<std::vector<int32_t>>& windows) {
  IC_CHECK(!windows.empty(), "search: no calibration windows");
  for (size_t i = 0; i < windows.size(); ++i) {
    const int64_t n = static_cast<int64_t>(windows[i].size());
    IC_CHECK(n >= 2, "search: calibration window {} has {} tokens; at least 2 are needed to predict one", i, n);
    IC_CHECK(n <= model.info().context_max, "search: calibration window {} has {} tokens, past the model's "
             "trained context {}", i, n, model.info().context_max);
  }
}

void check_all_full(const Model& model) {
  IC_CHECK(model.pattern(), "search needs a DSA model with indexers on every layer (--indexers ALLF.safetensors, "
           "or a DSA checkpoint)");
  const LayerPattern& p = *model.pattern();
  IC_CHECK(p.n_full() == p.n_layers(), "search starts from indexers on every layer, but the model's pattern is {} "
           "({} of {} F); run it with an all-F pattern", p.str(), p.n_full(), p.n_layers());
}

int64_t max_len(const std::vector<std::vector<int32_t>>& windows) {
  size_t n = 0;
  for (const auto& w : windows) n = std::max(n, w.size());
  return static_cast<int64_t>(n);
}

int64_t predicted(const std::vector<std::vector<int32_t>>& windows) {
  int64_t n = 0;
  for (const auto& w : windows) n += static_cast<int64_t>(w.size()) - 1;
  return n;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  c.copy_from(t);
  return c;
}

// The greedy search with prefix reuse. Invariant between steps: for every window chunk, x[l] is
// the residual stream entering layer l (x[N] leaves the last layer) and topk[l] the selection of
// F layer l, both under the committed pattern pat_.
class Searcher {
 public:
  Searcher(Model& m, const std::vector<std::vector<int32_t>>& windows, const SearchConfig& cfg,
           const SearchProgressFn& progress)
      : m_(m), windows_(windows), cfg_(cfg), progress_(progress), N_(m.info().n_layers),
        W_(static_cast<int64_t>(windows.size())), n_pred_(predicted(windows)), pat_(LayerPattern::all_full(N_)),
        kv_(m.make_cache(max_len(windows))) {
    for (const auto& w : windows_) {
      Window win;
      const int64_t n = static_cast<int64_t>(w.size());
      for (int64_t p0 = 0; p0 < n; p0 += cfg_.chunk) {
        Chunk c;
        c.p0 = p0;
        c.n = std::min(n, p0 + cfg_.chunk) - p0;
        c.x.resize(static_cast<size_t>(N_ + 1));
        c.topk.resize(static_cast<size_t>(N_));
        Tensor x = m_.embed(std::span<const int32_t>(w).subspan(c.p0, c.n));
        c.x[0] = m_.device() == Device::CPU ? x : x.to(m_.device());
        win.chunks.push_back(std::move(c));
      }
      wins_.push_back(std::move(win));
    }
  }

  SearchResult run() {
    t0_ = Clock::now();
    SearchResult r;
    r.n_layers = N_;
    r.all_f_loss = refresh(0);
    cost_.naive_passes = 1;  // the all-F pass
    const int64_t total = N_ - cfg_.keep;
    std::vector<double> stale(static_cast<size_t>(N_), std::numeric_limits<double>::quiet_NaN());
    const std::vector<int64_t> starts = block_starts(N_, cfg_.blocks);
    int64_t step = 0;
    while (pat_.n_full() > cfg_.keep) {
      ++step;
      std::vector<int64_t> cands;
      for (int64_t l = 1; l < N_; ++l)
        if (pat_.is_full(l) && std::find(starts.begin(), starts.end(), l) == starts.end()) cands.push_back(l);
      IC_CHECK(!cands.empty(), "search: no layer left to flip at {} F layers (blocks {})", pat_.n_full(),
               cfg_.blocks);
      std::vector<std::pair<double, int64_t>> flips;  // (candidate loss, layer) to commit in order
      std::vector<std::pair<int64_t, double>> scored;  // (layer, loss) in evaluation order
      int64_t evaluated = 0;
      SearchProgress pr{static_cast<int64_t>(r.trajectory.size()), total, 0, static_cast<int64_t>(cands.size())};
      const auto report = [&](double best) {
        if (!progress_) return;
        pr.candidate = evaluated;
        pr.layer_evals = cost_.layer_evals;
        pr.layer_evals_estimate = estimate(cands, evaluated, total - static_cast<int64_t>(r.trajectory.size()));
        pr.seconds = std::chrono::duration<double>(Clock::now() - t0_).count();
        pr.best_loss = best;
        progress_(pr);
      };
      if (cfg_.lazy && step > 1) {
        // Stale losses first (ties: lower layer); stop once the best fresh loss beats every stale one left.
        std::vector<int64_t> order = cands;
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return stale[a] < stale[b]; });
        std::pair<double, int64_t> best{std::numeric_limits<double>::infinity(), -1};
        for (size_t i = 0; i < order.size(); ++i) {
          const double loss = evaluate(order[i]);
          stale[order[i]] = loss;
          scored.emplace_back(order[i], loss);
          ++evaluated;
          best = std::min(best, std::pair<double, int64_t>{loss, order[i]});
          report(best.first);
          if (i + 1 < order.size() && best.first <= stale[order[i + 1]]) break;
        }
        flips.push_back(best);
      } else {
        std::vector<std::pair<double, int64_t>> best(starts.size(), {std::numeric_limits<double>::infinity(), -1});
        for (int64_t j : cands) {
          const double loss = evaluate(j);
          stale[j] = loss;
          scored.emplace_back(j, loss);
          ++evaluated;
          const size_t b = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), j) - starts.begin() - 1);
          best[b] = std::min(best[b], std::pair<double, int64_t>{loss, j});
          double overall = std::numeric_limits<double>::infinity();
          for (const auto& p : best) overall = std::min(overall, p.first);
          report(overall);
        }
        for (const auto& p : best)
          if (p.second >= 0) flips.push_back(p);
        std::sort(flips.begin(), flips.end());
      }
      cost_.naive_passes += evaluated;
      for (const auto& [cand_loss, layer] : flips) {
        if (pat_.n_full() <= cfg_.keep) break;
        pat_ = with_layer(pat_, layer, false);
        const double loss = refresh(layer);
        if (cfg_.blocks == 1 && loss != cand_loss) ++cost_.refresh_mismatches;
        r.trajectory.push_back({step, layer, loss, cand_loss, evaluated, pat_, std::move(scored)});
        evaluated = 0;  // counted once per step
        scored.clear();
      }
    }
    cost_.naive_layer_evals = cost_.naive_passes * N_ * W_;
    cost_.seconds = std::chrono::duration<double>(Clock::now() - t0_).count();
    cost_.cache_bytes = cache_bytes();
    r.cost = cost_;
    return r;
  }

 private:
  struct Chunk {
    int64_t p0 = 0, n = 0;
    std::vector<Tensor> x;     // [N + 1] F32 [n, dim]: the stream entering each layer; x[N] leaves the model
    std::vector<Tensor> topk;  // [N] I32 [n, k]: each F layer's selection; undefined on S layers
  };
  struct Window {
    std::vector<Chunk> chunks;
  };

  // Loss of the committed pattern with layer j flipped to S: layers < j are unchanged, so the run
  // starts from the cached stream entering j with the selection j now shares.
  double evaluate(int64_t j) {
    const LayerPattern cand = with_layer(pat_, j, false);
    const int64_t src = cand.source(j);
    double nll = 0.0;
    for (size_t w = 0; w < wins_.size(); ++w)
      for (const Chunk& c : wins_[w].chunks) {
        Tensor x = clone(c.x[j]);
        IndexReuse reuse(cand);
        reuse.provide(src, c.topk[src]);
        m_.forward_layers(j, N_, x, *kv_, c.p0, reuse);
        add_chunk_nll(x, windows_[w], c.p0, nll);
      }
    cost_.layer_evals += (N_ - j) * W_;
    cost_.head_evals += W_;
    ++cost_.candidates;
    return nll / n_pred_;
  }

  // Recomputes the cache from layer `from` on under pat_ (the stream entering `from` is valid);
  // returns the loss of pat_.
  double refresh(int64_t from) {
    double nll = 0.0;
    for (size_t w = 0; w < wins_.size(); ++w)
      for (Chunk& c : wins_[w].chunks) {
        Tensor x = clone(c.x[from]);
        IndexReuse reuse(pat_);
        if (from > 0) reuse.provide(pat_.source(from - 1), c.topk[pat_.source(from - 1)]);
        for (int64_t l = from; l < N_; ++l) {
          m_.forward_layers(l, l + 1, x, *kv_, c.p0, reuse);
          c.topk[l] = reuse.held_layer() == l ? reuse.held() : Tensor();
          c.x[l + 1] = clone(x);
        }
        add_chunk_nll(x, windows_[w], c.p0, nll);
      }
    cost_.layer_evals += (N_ - from) * W_;
    cost_.head_evals += W_;
    return nll / n_pred_;
  }

  // Adds -log p(next token) of the chunk's rows that have a next token in the window to `nll`,
  // one token at a time in window order, as mean_window_nll does: the same sum to the last bit.
  void add_chunk_nll(const Tensor& x, const std::vector<int32_t>& tokens, int64_t p0, double& nll) {
    const int64_t n = x.dim(0), len = static_cast<int64_t>(tokens.size());
    for (int64_t r0 = 0; r0 < n; r0 += cfg_.logit_rows) {
      const int64_t r1 = std::min({n, r0 + cfg_.logit_rows, len - 1 - p0});
      if (r1 <= r0) break;
      // The head and each row's log-softmax run on the model's device; only the rows' log-probs
      // come back, and they are summed here in row order. On the CPU that is the same bits as
      // mean_window_nll (the CPU matmul's rows do not depend on how many rows it is given; the
      // tests check it); on a GPU, cuBLAS may round differently for other row counts.
      row_lp_.resize(static_cast<size_t>(r1 - r0));
      m_.output_logprobs(x.slice_rows(r0, r1), std::span(tokens).subspan(p0 + r0 + 1, r1 - r0), row_lp_.data());
      for (int64_t r = r0; r < r1; ++r) nll -= row_lp_[r - r0];
    }
  }

  // Projected total layer evaluations: this step's remaining candidates, then later steps with
  // one candidate fewer each at this step's mean depth, plus one refresh per flip.
  int64_t estimate(const std::vector<int64_t>& cands, int64_t done, int64_t flips_left) const {
    double depth = 0.0, rest = 0.0;
    for (size_t i = 0; i < cands.size(); ++i) {
      depth += N_ - cands[i];
      if (static_cast<int64_t>(i) >= done) rest += N_ - cands[i];
    }
    depth /= static_cast<double>(cands.size());
    double future = flips_left * depth;  // refreshes
    const int64_t per_step = std::max<int64_t>(1, cfg_.blocks);
    int64_t m = static_cast<int64_t>(cands.size());
    for (int64_t f = per_step; f < flips_left; f += per_step) {
      m = std::max<int64_t>(0, m - per_step);
      future += m * depth;
    }
    return cost_.layer_evals + static_cast<int64_t>((rest + future) * W_);
  }

  double cache_bytes() const {
    double b = 0;
    for (const Window& w : wins_)
      for (const Chunk& c : w.chunks) {
        for (const Tensor& t : c.x) b += t.defined() ? static_cast<double>(t.nbytes()) : 0.0;
        for (const Tensor& t : c.topk) b += t.defined() ? static_cast<double>(t.nbytes()) : 0.0;
      }
    return b;
  }

  Model& m_;
  const std::vector<std::vector<int32_t>>& windows_;
  SearchConfig cfg_;
  SearchProgressFn progress_;
  int64_t N_, W_, n_pred_;
  LayerPattern pat_;
  std::unique_ptr<ModelCache> kv_;
  std::vector<float> row_lp_;  // [rows of one logit block]: log p(next token)
  std::vector<Window> wins_;
  SearchCost cost_;
  Clock::time_point t0_;
};

SearchConfig checked(const Model& model, SearchConfig c) {
  const int64_t N = model.info().n_layers;
  if (c.keep == 0) c.keep = keep_count(N, 8);
  IC_CHECK(c.keep >= 1 && c.keep <= N, "search: keep {} F layers is outside [1, {}] (the model has {} layers)",
           c.keep, N, N);
  IC_CHECK(c.blocks >= 1 && c.blocks <= N, "search: {} blocks for {} layers", c.blocks, N);
  IC_CHECK(c.keep >= c.blocks, "search: keep {} is below the block count {} (each block's first layer stays F)",
           c.keep, c.blocks);
  IC_CHECK(!(c.lazy && c.blocks > 1), "search: lazy greedy and blocks together are not supported");
  IC_CHECK(c.chunk >= 1 && c.logit_rows >= 1, "search: chunk {} and logit rows {} must be positive", c.chunk,
           c.logit_rows);
  return c;
}

}  // namespace

SearchResult greedy_search(Model& model, const std::vector<std::vector<int32_t>>& windows,
                           const SearchConfig& config, const SearchProgressFn& progress) {
  check_all_full(model);
  check_windows(model, windows);
  const SearchConfig cfg = checked(model, config);
  // The search passes its patterns explicitly; the all-F spec stays for the cache's indexer keys.
  Searcher s(model, windows, cfg, progress);
  return s.run();
}

double mean_window_nll(Model& model, const std::vector<std::vector<int32_t>>& windows) {
  check_windows(model, windows);
  const auto kv_owner = model.make_cache(max_len(windows));
  ModelCache& kv = *kv_owner;
  std::vector<float> lp;
  double nll = 0.0;
  for (const auto& w : windows) {
    kv.clear();
    const std::span<const int32_t> t(w);
    lp.resize(w.size() - 1);
    model.forward_logprobs(t.first(w.size() - 1), kv, t.subspan(1), lp.data());
    for (float v : lp) nll -= v;
  }
  return nll / predicted(windows);
}

double pattern_nll(Model& model, const std::vector<std::vector<int32_t>>& windows, const LayerPattern& pattern) {
  PatternScope scope(model, pattern);
  return mean_window_nll(model, windows);
}

SearchResult greedy_search_reference(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                     int64_t keep) {
  check_all_full(model);
  check_windows(model, windows);
  SearchConfig cfg;
  cfg.keep = keep;
  cfg = checked(model, cfg);
  const int64_t N = model.info().n_layers;
  const auto t0 = Clock::now();
  SearchResult r;
  r.n_layers = N;
  LayerPattern pat = LayerPattern::all_full(N);
  r.all_f_loss = pattern_nll(model, windows, pat);
  r.cost.naive_passes = 1;
  int64_t step = 0;
  while (pat.n_full() > cfg.keep) {
    std::pair<double, int64_t> best{std::numeric_limits<double>::infinity(), -1};
    std::vector<std::pair<int64_t, double>> scored;
    for (int64_t j = 1; j < N; ++j)
      if (pat.is_full(j)) {
        const double loss = pattern_nll(model, windows, with_layer(pat, j, false));
        scored.emplace_back(j, loss);
        best = std::min(best, std::pair<double, int64_t>{loss, j});
      }
    const int64_t evaluated = static_cast<int64_t>(scored.size());
    pat = with_layer(pat, best.second, false);
    r.trajectory.push_back({++step, best.second, best.first, best.first, evaluated, pat, std::move(scored)});
    r.cost.naive_passes += evaluated;
  }
  r.cost.candidates = r.cost.naive_passes - 1;
  r.cost.naive_layer_evals = r.cost.layer_evals = r.cost.naive_passes * N * static_cast<int64_t>(windows.size());
  r.cost.head_evals = r.cost.naive_passes * static_cast<int64_t>(windows.size());
  r.cost.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

}  // namespace ic
