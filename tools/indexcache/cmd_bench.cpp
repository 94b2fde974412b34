// indexcache bench: prefill and decode throughput and peak memory, per thread count.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "common.h"
#include "core/error.h"
#include "model/llama.h"

namespace ic::cli {

namespace {
struct BenchArgs {
  ModelOptions model;
  int64_t prompt = 512;
  int64_t gen = 128;
  std::vector<int> threads;
  int reps = 3;
  bool json = false;
  bool openmp_decode = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run(const BenchArgs& a) {
  auto model = load_model(a.model, a.json);
  if (auto* llama = dynamic_cast<LlamaModel*>(model.get())) llama->set_decode_pool(!a.openmp_decode);
  const ModelInfo& c = model->info();
  IC_CHECK(a.prompt + a.gen <= c.context_max, "bench: {} + {} tokens exceed the model's context {}", a.prompt, a.gen,
           c.context_max);
  // Random ids: throughput does not depend on the text, and the run needs no data file.
  std::mt19937 rng(7);
  std::vector<int32_t> ids(static_cast<size_t>(a.prompt));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % c.vocab);
  std::vector<int> threads = a.threads;
  if (threads.empty()) threads = {omp_get_max_threads()};
  nlohmann::json rows = nlohmann::json::array();
  if (!a.json)
    std::printf("| threads | prefill tokens | prefill tok/s | indexer %% | attention %% | decode tokens | decode tok/s | peak RSS MiB |\n"
                "|---|---|---|---|---|---|---|---|\n");
  for (int t : threads) {
    omp_set_num_threads(t);
    const auto kv_owner = model->make_cache(a.prompt + a.gen);
    ModelCache& kv = *kv_owner;
    Tensor logits;
    double best_prefill = 1e30, best_decode = 1e30, index_share = 0, attn_share = 0;
    for (int r = 0; r < a.reps; ++r) {
      kv.clear();
      model->reset_stats();
      auto t0 = std::chrono::steady_clock::now();
      model->forward(ids, kv, logits, false);
      const double s = seconds_since(t0);
      if (s < best_prefill) {
        best_prefill = s;
        index_share = model->stats().indexer / model->stats().total;
        attn_share = model->stats().attention / model->stats().total;
      }
      t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < a.gen; ++i) {
        const int32_t one[1] = {ids[static_cast<size_t>(i) % ids.size()]};
        model->forward(one, kv, logits, false);
      }
      best_decode = std::min(best_decode, seconds_since(t0));
    }
    const double pf = a.prompt / best_prefill, dc = a.gen / best_decode;
    rows.push_back({{"threads", t}, {"prefill_tokens", a.prompt}, {"prefill_tokens_per_s", pf},
                    {"prefill_indexer_share", index_share}, {"prefill_attention_share", attn_share},
                    {"decode_tokens", a.gen}, {"decode_tokens_per_s", dc}, {"peak_rss_mib", peak_rss_mib()}});
    if (!a.json)
      std::printf("| %d | %lld | %.1f | %.1f | %.1f | %lld | %.1f | %.0f |\n", t, (long long)a.prompt, pf,
                  100 * index_share, 100 * attn_share, (long long)a.gen, dc, peak_rss_mib());
    std::fflush(stdout);
  }
  if (a.json) std::printf("%s\n", nlohmann::json({{"model", model->path()}, {"results", rows}}).dump().c_str());
}
}  // namespace

void register_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput (best of --reps)");
  add_model_options(cmd, a->model);
  cmd->add_option("-p,--n-prompt", a->prompt, "Prompt tokens to prefill")->check(CLI::PositiveNumber);
  cmd->add_option("-n,--n-gen", a->gen, "Tokens to decode after the prompt")->check(CLI::NonNegativeNumber);
  cmd->add_option("--thread-list", a->threads, "Thread counts to measure, e.g. --thread-list 1 2");
  cmd->add_option("-r,--reps", a->reps, "Repetitions; the best is reported")->check(CLI::PositiveNumber);
  cmd->add_flag("--json", a->json, "Print JSON");
  cmd->add_flag("--openmp-decode", a->openmp_decode,
                "Decode on OpenMP instead of the model's thread pool (same results; for comparison)");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
