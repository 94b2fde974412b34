// indexcache init-indexers: freshly initialised lightning indexers for a model, the starting
// point of distillation (the weights are random until `distill` trains them).
#include <algorithm>
#include <cstdio>

#include "common.h"
#include "core/error.h"
#include "io/gguf.h"

namespace ic::cli {

namespace {
struct InitArgs {
  std::string model;
  std::string out;
  IndexerConfig cfg;
  std::string rope_style = "half";
  uint64_t seed = 0;
  bool rope_dim_given = false;
};

void run(InitArgs a) {
  const gguf::File f = gguf::File::open(resolve_model_path(a.model));
  const LlamaConfig mc = LlamaConfig::from_gguf(f);
  a.cfg.rope_style = ops::rope_style_from_string(a.rope_style);
  if (!a.rope_dim_given) a.cfg.rope_dim = std::min<int64_t>(a.cfg.rope_dim, a.cfg.head_dim);
  a.cfg.rope_base = mc.rope_base;
  a.cfg.validate(mc.dim);
  DsaSpec spec;
  spec.config = a.cfg;
  spec.pattern = LayerPattern::all_full(mc.n_layers);
  for (int64_t l = 0; l < mc.n_layers; ++l)
    spec.indexers.push_back(IndexerWeights::random(a.cfg, mc.dim, a.seed * 1000003 + static_cast<uint64_t>(l)));
  spec.metadata["indexcache.recipe"] = fmt::format("random initialisation (seed {}), untrained", a.seed);
  spec.metadata["indexcache.data"] = "none";
  save_indexers(a.out, spec, mc.dim);
  std::fprintf(stderr, "wrote %s: %lld indexers of %lld heads x %lld, top-k %lld (untrained)\n", a.out.c_str(),
               (long long)mc.n_layers, (long long)a.cfg.n_heads, (long long)a.cfg.head_dim, (long long)a.cfg.topk);
}
}  // namespace

void register_init_indexers(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* cmd = app.add_subcommand("init-indexers", "Write randomly initialised lightning indexers for a model");
  cmd->add_option("-m,--model", a->model, "GGUF model file");
  cmd->add_option("-o,--output", a->out, "Indexer file to write (safetensors)")->required();
  cmd->add_option("--heads", a->cfg.n_heads, "Indexer heads H_I");
  cmd->add_option("--head-dim", a->cfg.head_dim, "Indexer head dim d_I");
  cmd->add_option("--rope-dim", a->cfg.rope_dim, "Leading dims that RoPE rotates (default: min(64, head dim))");
  cmd->add_option("--rope-style", a->rope_style, "half (NeoX, DeepSeek-V3.2) or interleaved (GLM-5)");
  cmd->add_option("--topk", a->cfg.topk, "Keys each query attends to");
  cmd->add_option("-s,--seed", a->seed, "Random seed");
  cmd->callback([a, cmd] {
    a->rope_dim_given = cmd->count("--rope-dim") > 0;
    run(*a);
  });
}

}  // namespace ic::cli
