// indexcache distill: train the lightning indexers of a frozen dense model by distillation
// (docs/DISTILL.md), checkpoint and resume, and evaluate them on held-out text.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "indexcache/family_trainer.h"
#include "indexcache/hf_writeback.h"
#include "indexcache/trainer.h"

namespace ic::cli {

namespace {
struct DistillArgs {
  ModelOptions model;  // -m, -t, --device; the teacher runs dense
  std::vector<std::string> data, heldout;
  std::string out, checkpoint, resume, init, eval_indexers, eval_pattern, mode = "warmup", pattern;
  std::string rope_style = "half", save_dtype = "f32";
  int64_t index_freq = 0, index_offset = 1;
  IndexerConfig icfg;
  AdamWConfig acfg;
  int64_t ctx = 512, batch = 4, steps = 100, save_every = 0, heldout_windows = 8, max_tokens = 0, log_every = 1;
  uint64_t seed = 0;
  double time_limit = 0.0;  // seconds from the command's start; 0: none
  bool rope_dim_given = false, topk_given = false, eval_only = false, json = false;
  std::string command_line;
  std::chrono::steady_clock::time_point started;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string data_summary(const char* split, const std::vector<std::string>& paths, const TextWindows& w) {
  return fmt::format("{}: {} ({} files, {} tokens, {} windows of {}, fingerprint {})", split, fmt::join(paths, ", "),
                     w.files().size(), w.n_tokens(), w.n_windows(), w.ctx(), w.fingerprint());
}

void print_eval(const EvalReport& r, const LayerPattern& pattern, int64_t topk, bool json) {
  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerEval& e : r.layers)
      layers.push_back({{"layer", e.layer},
                        {"full", e.layer == e.source},
                        {"source", e.source},
                        {"kl", e.stats.mean_kl()},
                        {"recall", e.stats.recall()},
                        {"rows", e.stats.rows}});
    const nlohmann::json j = {{"pattern", pattern.str()}, {"topk", topk}, {"windows", r.windows},
                              {"tokens", r.tokens},            {"mean_kl", r.mean_kl()},  {"recall", r.recall()},
                              {"seconds", r.seconds},          {"layers", layers}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("held-out: %lld windows, %lld tokens, pattern %s, top-k %lld\n", (long long)r.windows,
              (long long)r.tokens, pattern.str().c_str(), (long long)topk);
  std::printf("layer | F/S | source | KL(p || q) | recall@k\n");
  for (const LayerEval& e : r.layers)
    std::printf("%5lld |  %s  | %6lld | %10.4f | %8.4f\n", (long long)e.layer, e.layer == e.source ? "F" : "S",
                (long long)e.source, e.stats.mean_kl(), e.stats.recall());
  std::printf(" mean |     |        | %10.4f | %8.4f\n", r.mean_kl(), r.recall());
}

void run_family(const DistillArgs& a);

void run(DistillArgs a) {
  if (is_hf_folder(resolve_model_path(a.model.model))) return run_family(a);
  auto model = load_llama(a.model, "distill", a.json);
  const LlamaConfig& mc = model->config();
  const Tokenizer& tok = model->tokenizer();
  const TokenizeFn tokenize = [&](std::string_view text) { return tok.encode(text, false); };
  TextDataOptions dopt;
  dopt.ctx = a.ctx;
  dopt.separator = tok.eos_id();
  IC_CHECK(!a.heldout.empty() || !a.eval_only, "--eval-only needs --heldout FILES");
  IC_CHECK(a.pattern.empty() || a.index_freq == 0, "give --pattern or --index-freq, not both");

  std::optional<LayerPattern> pattern;
  if (!a.pattern.empty()) pattern = LayerPattern::parse(a.pattern, mc.n_layers);
  if (a.index_freq > 0) pattern = LayerPattern::from_freq(mc.n_layers, a.index_freq, a.index_offset);
  std::optional<LayerPattern> eval_pattern;
  if (!a.eval_pattern.empty()) eval_pattern = LayerPattern::parse(a.eval_pattern, mc.n_layers);

  std::optional<TextWindows> held;
  if (!a.heldout.empty()) {
    TextDataOptions hopt = dopt;
    hopt.max_windows = a.heldout_windows;
    hopt.max_tokens = a.heldout_windows * a.ctx;  // read no more files than the windows need
    held = TextWindows::load(a.heldout, tokenize, hopt);
  }

  if (a.eval_only) {
    IC_CHECK(!a.eval_indexers.empty(), "--eval-only needs --indexers FILE (the indexers to evaluate)");
    const std::optional<LayerPattern> p = eval_pattern ? eval_pattern : pattern;
    const DsaSpec spec = load_indexers(a.eval_indexers, mc.n_layers, mc.dim, p,
                                       a.topk_given ? std::optional<int64_t>(a.icfg.topk) : std::nullopt);
    print_eval(evaluate(*model, spec, *held, model->device()), spec.pattern, spec.config.topk, a.json);
    return;
  }

  IC_CHECK(!a.data.empty(), "distill needs --data FILES_OR_FOLDERS (the training text)");
  IC_CHECK(!a.out.empty(), "distill needs -o FILE (the trained indexers)");
  TrainerConfig cfg;
  cfg.mode = distill_mode_from_string(a.mode);
  IC_CHECK(cfg.mode == DistillMode::kPattern || !pattern,
           "--pattern/--index-freq train for an IndexCache pattern: use --mode pattern (warmup is all-F)");
  IC_CHECK(cfg.mode == DistillMode::kWarmup || pattern, "--mode pattern needs --pattern FSSF... or --index-freq N");
  if (pattern) cfg.pattern = *pattern;
  cfg.indexer = a.icfg;
  cfg.indexer.rope_style = ops::rope_style_from_string(a.rope_style);
  cfg.indexer.rope_base = mc.rope_base;
  if (!a.rope_dim_given) cfg.indexer.rope_dim = std::min<int64_t>(cfg.indexer.rope_dim, cfg.indexer.head_dim);
  if (!a.init.empty()) {  // the indexer shape comes from the file
    const DsaSpec init = load_indexers(a.init, mc.n_layers, mc.dim, pattern ? pattern : LayerPattern::all_full(mc.n_layers));
    const int64_t topk = cfg.indexer.topk;
    cfg.indexer = init.config;
    if (a.topk_given) cfg.indexer.topk = topk;
  }
  cfg.init_path = a.init;
  cfg.adamw = a.acfg;
  cfg.adamw.total_steps = a.steps;
  cfg.batch = a.batch;
  cfg.seed = a.seed;
  cfg.device = model->device();  // --device cuda: the teacher, the targets and the loss all on the GPU

  TextDataOptions topt = dopt;
  topt.max_tokens = a.max_tokens;
  const TextWindows train = TextWindows::load(a.data, tokenize, topt);
  if (!a.json) std::fprintf(stderr, "%s\n", data_summary("train", a.data, train).c_str());
  if (held && !a.json) std::fprintf(stderr, "%s\n", data_summary("heldout", a.heldout, *held).c_str());

  Trainer trainer(*model, train, cfg);
  const std::string ckpt = a.checkpoint.empty() ? a.out + ".ckpt" : a.checkpoint;
  if (!a.resume.empty()) {
    trainer.resume(a.resume);
    std::fprintf(stderr, "resumed %s at step %lld (epoch %lld, window %lld)\n", a.resume.c_str(),
                 (long long)trainer.steps_done(), (long long)trainer.loader_position().epoch,
                 (long long)trainer.loader_position().index);
  }
  std::fprintf(stderr, "distill: mode %s, pattern %s (%lld F layers), indexer %lldx%lld top-k %lld, %lld steps x %lld "
               "windows of %lld, lr %g, %d threads, loss on %s\n",
               a.mode.c_str(), trainer.pattern().str().c_str(), (long long)trainer.pattern().n_full(),
               (long long)cfg.indexer.n_heads, (long long)cfg.indexer.head_dim, (long long)cfg.indexer.topk,
               (long long)a.steps, (long long)a.batch, (long long)a.ctx, cfg.adamw.lr, omp_get_max_threads(),
               std::string(device_name(cfg.device)).c_str());

  double seconds = 0.0, forward_s = 0.0, teacher_s = 0.0, loss_s = 0.0;
  int64_t tokens = 0, steps_run = 0;
  bool stopped = false;  // by --time-limit, before the last step
  while (!trainer.done()) {
    // --time-limit: at least one step, then only a step that the mean step time says still fits.
    if (a.time_limit > 0 && steps_run > 0 &&
        seconds_since(a.started) + seconds / static_cast<double>(steps_run) > a.time_limit) {
      stopped = true;
      break;
    }
    const StepReport r = trainer.step();
    seconds += r.seconds;
    forward_s += r.forward_s;
    teacher_s += r.teacher_s;
    loss_s += r.loss_s;
    tokens += r.tokens;
    ++steps_run;
    if (r.step % a.log_every == 0 || r.step == r.total) {
      const double tps = tokens / std::max(seconds, 1e-9);
      const double eta = (r.total - r.step) * seconds / static_cast<double>(steps_run);
      std::fprintf(stderr, "step %lld/%lld | loss %.4f | recall %.4f | lr %.3g | |g| %.3g | %.0f tokens/s | ETA %.0f s\n",
                   (long long)r.step, (long long)r.total, r.mean_kl, r.recall, r.lr, r.max_grad_norm, tps, eta);
    }
    if (a.save_every > 0 && r.step % a.save_every == 0 && r.step != r.total) trainer.save_checkpoint(ckpt);
  }
  trainer.save_checkpoint(ckpt);
  if (stopped)
    std::fprintf(stderr,
                 "stopped by --time-limit %g s after step %lld of %lld (the learning rate had not finished its "
                 "schedule); the output is written from this step, --resume %s continues the run\n",
                 a.time_limit, (long long)trainer.steps_done(), (long long)trainer.total_steps(), ckpt.c_str());
  if (steps_run > 0)
    std::fprintf(stderr,
                 "trained %lld steps in %.1f s (forward %.1f, teacher %.1f, loss+grad %.1f): %.0f tokens/s, %.0f "
                 "tokens/s per layer-step (%lld F layers)\n",
                 (long long)steps_run, seconds, forward_s, teacher_s, loss_s, tokens / seconds,
                 tokens * trainer.pattern().n_full() / seconds, (long long)trainer.pattern().n_full());

  DsaSpec spec = trainer.spec();
  spec.metadata["indexcache.recipe"] = fmt::format("indexcache distill ({}); {}", a.command_line, [&] {
    std::vector<std::string> kv;
    for (const auto& [k, v] : trainer.run_fields()) kv.push_back(k + "=" + v);
    return fmt::format("{}", fmt::join(kv, ", "));
  }());
  spec.metadata["indexcache.steps_done"] = fmt::format("{} of {}{}", trainer.steps_done(), trainer.total_steps(),
                                                      stopped ? " (stopped by --time-limit)" : "");
  spec.metadata["indexcache.data"] =
      held ? data_summary("train", a.data, train) + "; " + data_summary("heldout", a.heldout, *held)
           : data_summary("train", a.data, train);
  const DType storage = a.save_dtype == "f16" ? DType::F16 : a.save_dtype == "bf16" ? DType::BF16 : DType::F32;
  save_indexers(a.out, spec, mc.dim, storage);
  std::fprintf(stderr, "wrote %s with %s weights (checkpoint %s)\n", a.out.c_str(), a.save_dtype.c_str(), ckpt.c_str());
  // Evaluate what the file holds, rounding included.
  if (storage != DType::F32) spec = load_indexers(a.out, mc.n_layers, mc.dim, spec.pattern, spec.config.topk);

  if (held) {
    if (eval_pattern) spec.pattern = *eval_pattern;
    print_eval(evaluate(*model, spec, *held, model->device()), spec.pattern, spec.config.topk, a.json);
  }
}

// -m DIR: the DSA family (family_trainer.h). A DSA checkpoint's own indexers are trained and
// written back into a copy of the folder (-o DIR, hf_writeback.h); a dense MLA model
// (glm4_moe_lite) gets x-fed indexers, written as an indexer file (-o FILE) for --indexers.
void run_family(const DistillArgs& a) {
  IC_CHECK(a.resume.empty() && a.save_every == 0 && a.checkpoint.empty() && a.init.empty(),
           "distill -m DIR: --resume, --save-every, --checkpoint and --init are for llama-family runs only so far");
  IC_CHECK(!a.eval_only, "distill -m DIR: --eval-only is for indexer files of llama-family models; evaluate a "
           "written folder with `indexcache eval -m OUT_DIR --recall`");
  IC_CHECK(a.model.device == "cpu", "distill -m DIR runs on the CPU reference path (--device cpu)");
  std::unique_ptr<Model> base = load_model(a.model, a.json);
  auto* model = dynamic_cast<MlaMoeModel*>(base.get());
  IC_CHECK(model, "distill -m {}: not a DSA-family model", a.model.model);
  const MlaMoeConfig& mc = model->config();
  const Tokenizer& tok = model->tokenizer();
  const TokenizeFn tokenize = [&](std::string_view text) { return tok.encode(text, false); };
  TextDataOptions dopt;
  dopt.ctx = a.ctx;
  dopt.separator = tok.eos_id();
  IC_CHECK(!a.data.empty(), "distill needs --data FILES_OR_FOLDERS (the training text)");
  IC_CHECK(!a.out.empty(), "distill -m DIR needs -o {}", mc.has_indexer_arch() ? "OUT_DIR (a new HF folder)" : "FILE (the indexer file)");
  IC_CHECK(a.pattern.empty() || a.index_freq == 0, "give --pattern or --index-freq, not both");
  IC_CHECK(!mc.has_indexer_arch() || !std::filesystem::exists(a.out), "distill -m {}: -o {} exists (give a new folder)",
           a.model.model, a.out);
  FamilyTrainerConfig cfg;
  cfg.mode = distill_mode_from_string(a.mode);
  std::optional<LayerPattern> pattern;
  if (!a.pattern.empty()) pattern = LayerPattern::parse(a.pattern, mc.n_layers);
  if (a.index_freq > 0) pattern = LayerPattern::from_freq(mc.n_layers, a.index_freq, a.index_offset);
  IC_CHECK(cfg.mode == DistillMode::kPattern || !pattern,
           "--pattern/--index-freq train for an IndexCache pattern: use --mode pattern (warmup is all-F)");
  IC_CHECK(cfg.mode == DistillMode::kWarmup || pattern, "--mode pattern needs --pattern FSSF... or --index-freq N");
  if (pattern) cfg.pattern = *pattern;
  cfg.adamw = a.acfg;
  cfg.adamw.total_steps = a.steps;
  cfg.batch = a.batch;
  cfg.seed = a.seed;
  if (!mc.has_indexer_arch()) {
    cfg.attach = a.icfg;
    cfg.attach.rope_style = ops::rope_style_from_string(a.rope_style);
    cfg.attach.rope_base = static_cast<float>(mc.rope.theta);
    if (!a.rope_dim_given) cfg.attach.rope_dim = std::min<int64_t>(cfg.attach.rope_dim, cfg.attach.head_dim);
  } else {
    IC_CHECK(!a.topk_given && !a.rope_dim_given, "distill -m {}: the indexer's shape, RoPE and top-k are the "
             "checkpoint's ({})", a.model.model, mc.architecture);
  }
  TextDataOptions topt = dopt;
  topt.max_tokens = a.max_tokens;
  const TextWindows train = TextWindows::load(a.data, tokenize, topt);
  std::optional<TextWindows> held;
  if (!a.heldout.empty()) {
    TextDataOptions hopt = dopt;
    hopt.max_windows = a.heldout_windows;
    hopt.max_tokens = a.heldout_windows * a.ctx;
    held = TextWindows::load(a.heldout, tokenize, hopt);
  }
  if (!a.json) std::fprintf(stderr, "%s\n", data_summary("train", a.data, train).c_str());
  FamilyTrainer trainer(*model, train, cfg);
  const FamilyIndexerShape sh = trainer.shape();
  std::fprintf(stderr, "distill: %s, mode %s, pattern %s (%lld F layers), %s indexer %lldx%lld top-k %lld, %lld steps "
               "x %lld windows of %lld, lr %g, MLA teacher (absorbed, softmax scale %.6g)\n",
               mc.architecture.c_str(), a.mode.c_str(), trainer.pattern().str().c_str(),
               (long long)trainer.pattern().n_full(), trainer.own_indexers() ? "the checkpoint's" : "x-fed",
               (long long)sh.n_heads, (long long)sh.head_dim, (long long)sh.topk, (long long)a.steps,
               (long long)a.batch, (long long)a.ctx, cfg.adamw.lr, mc.softmax_scale());
  double seconds = 0.0;
  int64_t tokens = 0;
  while (!trainer.done()) {
    if (a.time_limit > 0 && trainer.steps_done() > 0 &&
        seconds_since(a.started) + seconds / static_cast<double>(trainer.steps_done()) > a.time_limit)
      break;
    const StepReport r = trainer.step();
    seconds += r.seconds;
    tokens += r.tokens;
    if (r.step % a.log_every == 0 || r.step == r.total)
      std::fprintf(stderr, "step %lld/%lld | loss %.4f | recall %.4f | lr %.3g | |g| %.3g | %.0f tokens/s\n",
                   (long long)r.step, (long long)r.total, r.mean_kl, r.recall, r.lr, r.max_grad_norm,
                   tokens / std::max(seconds, 1e-9));
  }
  if (trainer.own_indexers()) {
    std::map<int64_t, dsa::IndexerWeights> trained;
    for (int64_t l : trainer.pattern().full_layers()) trained[l] = trainer.checkpoint_weights(l);
    const WritebackReport rep = write_indexers_hf(model->path(), a.out, trained, trainer.pattern());
    std::fprintf(stderr, "wrote %s: %lld indexer tensors of %zu F layers in %s (%s), shards rewritten without them: "
                 "%s; %lld S-layer indexer tensors left out; config.json pattern %s\n",
                 a.out.c_str(), (long long)rep.tensors, trained.size(), rep.shard.c_str(),
                 rep.dtypes.begin()->second.c_str(), rep.rewritten.empty() ? "none" : fmt::format("{}", fmt::join(rep.rewritten, ", ")).c_str(),
                 (long long)rep.dropped, trainer.pattern().str().c_str());
  } else {
    DsaSpec spec = trainer.spec();
    spec.metadata["indexcache.recipe"] = fmt::format("indexcache distill ({})", a.command_line);
    spec.metadata["indexcache.steps_done"] = fmt::format("{} of {}", trainer.steps_done(), a.steps);
    const DType storage = a.save_dtype == "f16" ? DType::F16 : a.save_dtype == "bf16" ? DType::BF16 : DType::F32;
    save_indexers(a.out, spec, mc.hidden, storage);
    std::fprintf(stderr, "wrote %s with %s weights (attach with -m %s --indexers %s)\n", a.out.c_str(),
                 a.save_dtype.c_str(), model->path().c_str(), a.out.c_str());
  }
  if (held) print_eval(evaluate_family(*model, trainer.indexers(), *held), trainer.pattern(), sh.topk, a.json);
}
}  // namespace

void register_distill(CLI::App& app) {
  auto a = std::make_shared<DistillArgs>();
  CLI::App* cmd = app.add_subcommand("distill", "Train lightning indexers by distillation from the dense model");
  cmd->add_option("-m,--model", a->model.model, "GGUF model file or HF model folder of the DSA family (the frozen teacher)");
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads (default: all cores)");
  cmd->add_option("--device", a->model.device,
                  "Where the frozen model's forward, the teacher targets and the indexer loss + gradient run "
                  "(AdamW stays on the host)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--data", a->data, "Training text: .txt files or folders (searched recursively)");
  cmd->add_option("--heldout", a->heldout, "Held-out text for evaluation: files or folders");
  cmd->add_option("--heldout-windows", a->heldout_windows, "Evaluate on the first N held-out windows")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-o,--output", a->out, "Indexer file to write (safetensors; loadable by --indexers); -m DIR of a DSA checkpoint: a new HF folder with the trained indexers and the pattern");
  cmd->add_option("--mode", a->mode, "warmup (all layers F, own targets) or pattern (IndexCache L_multi)")
      ->check(CLI::IsMember({"warmup", "pattern"}));
  cmd->add_option("--pattern", a->pattern, "Pattern to train for (mode pattern), one F/S letter per layer");
  cmd->add_option("--index-freq", a->index_freq, "Pattern with an F layer every N layers (mode pattern)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--index-offset", a->index_offset, "Leading F layers for --index-freq")->check(CLI::PositiveNumber);
  cmd->add_option("--heads", a->icfg.n_heads, "Indexer heads H_I");
  cmd->add_option("--head-dim", a->icfg.head_dim, "Indexer head dim d_I");
  cmd->add_option("--rope-dim", a->icfg.rope_dim, "Leading dims RoPE rotates (default: min(64, head dim))");
  cmd->add_option("--rope-style", a->rope_style, "half (NeoX) or interleaved");
  cmd->add_option("--topk", a->icfg.topk, "Top-k for recall (and the file's k)");
  cmd->add_option("--save-dtype", a->save_dtype, "Weight type in the output file (the checkpoint keeps f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->add_option("--init", a->init, "Start from this indexer file (e.g. a warm-up run) instead of random weights");
  cmd->add_option("-c,--ctx", a->ctx, "Tokens per training window")->check(CLI::PositiveNumber);
  cmd->add_option("-b,--batch", a->batch, "Windows per step")->check(CLI::PositiveNumber);
  cmd->add_option("--steps", a->steps, "Optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", a->acfg.lr, "Peak learning rate");
  cmd->add_option("--min-lr", a->acfg.min_lr, "Learning rate at the end of the cosine");
  cmd->add_option("--warmup", a->acfg.warmup_steps, "Linear warm-up steps");
  cmd->add_option("--weight-decay", a->acfg.weight_decay, "Decoupled weight decay (projections only)");
  cmd->add_option("--clip", a->acfg.clip_norm, "Global gradient-norm cap per layer (0: off)");
  cmd->add_option("-s,--seed", a->seed, "Seed of the initial weights and the data order");
  cmd->add_option("--max-tokens", a->max_tokens, "Read training files until this many tokens (0: all)");
  cmd->add_option("--save-every", a->save_every, "Checkpoint every N steps (and always at the end)");
  cmd->add_option("--checkpoint", a->checkpoint, "Checkpoint file (default: OUTPUT.ckpt)");
  cmd->add_option("--resume", a->resume, "Continue from this checkpoint (same configuration required)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--time-limit", a->time_limit,
                  "Stop after the last step that fits in this many seconds from the start (checkpoint and output "
                  "are written; --resume continues)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--log-every", a->log_every, "Progress line every N steps")->check(CLI::PositiveNumber);
  cmd->add_flag("--eval-only", a->eval_only, "Only evaluate --indexers FILE on the held-out text");
  cmd->add_option("--indexers", a->eval_indexers, "With --eval-only: the indexer file to evaluate");
  cmd->add_option("--eval-pattern", a->eval_pattern, "Evaluate under this pattern (default: the trained one)");
  cmd->add_flag("--json", a->json, "Print the evaluation as one JSON object");
  cmd->callback([a, cmd] {
    a->started = std::chrono::steady_clock::now();
    a->rope_dim_given = cmd->count("--rope-dim") > 0;
    a->topk_given = cmd->count("--topk") > 0;
    std::vector<std::string> args;
    for (const CLI::Option* o : cmd->get_options())
      if (o->count() > 0 && !o->get_name().empty() && o->get_name() != "--help")
        args.push_back(o->get_name() + (o->get_expected_min() > 0 ? " " + fmt::format("{}", fmt::join(o->results(), " ")) : ""));
    a->command_line = fmt::format("{}", fmt::join(args, " "));
    run(*a);
  });
}

}  // namespace ic::cli
