#pragma once
// Options and helpers shared by the subcommands.
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "model/llama.h"
#include "model/load_model.h"

namespace ic::cli {

struct ModelOptions {
  std::string model;       // -m; default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf
  int threads = 0;         // -t; 0: all cores
  std::string device = "cpu";
  // DSA: lightning indexers and the IndexCache layer pattern (all optional; none = dense).
  std::string indexers;    // --indexers FILE
  std::string pattern;     // --pattern FSSF...
  int64_t index_freq = 0;  // --index-freq N (index_topk_freq convention)
  int64_t index_offset = 1;
  int64_t topk = 0;        // --topk K; 0: the file's
  std::string pattern_rule = "hf";  // --pattern-rule: how a checkpoint's config.json IndexCache knobs are read
  bool mtp = false;        // --mtp: load a DSA checkpoint's MTP/NextN layer
  std::string random_weights;  // --random-weights PRESET|config.json: a DSA-family model of random weights
  uint64_t weights_seed = 1;   // --weights-seed
  int64_t layers = 0;          // --layers N: only the first N layers of a --random-weights model
  bool indexer_fp8 = false;    // --indexer-fp8: the DSA family's GPU indexer in fp8
  int tp = 1;                  // --tp N: the DSA family's CPU forward on N tensor-parallel ranks (threads)
  int ep = 1;                  // --ep N: routed experts split by expert over the N ranks (1: by channel)
  bool ep_a2a = false;         // --ep-a2a: the MoE block by all-to-all dispatch/combine (needs --ep = --tp)
};

void add_model_options(CLI::App* cmd, ModelOptions& o);
// --tp and --ep alone (add_model_options adds them too), for commands with options of their own.
void add_parallel_options(CLI::App* cmd, ModelOptions& o);
// Applies the thread count and loads the model (a GGUF file or an HF model folder), with the
// indexers and layer pattern of the options, reporting the load on stderr.
std::unique_ptr<Model> load_model(const ModelOptions& o, bool quiet = false);
// The same for commands that so far work on the llama family only (they attach indexer files):
// fails naming the command when the model is of another family.
std::unique_ptr<LlamaModel> load_llama(const ModelOptions& o, const char* command, bool quiet = false);
// Attach indexers (llama family) and choose the layer pattern from the options.
void apply_dsa(const ModelOptions& o, Model& m, bool quiet);
std::string resolve_model_path(const std::string& given);  // -m, else $IC_MODEL, else the default
std::string read_file(const std::string& path);
void write_text(const std::string& path, const std::string& text);  // fails naming the path
double peak_rss_mib();

void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_bench(CLI::App& app);
void register_init_indexers(CLI::App& app);
void register_distill(CLI::App& app);
void register_eval(CLI::App& app);
void register_overlap(CLI::App& app);
void register_search(CLI::App& app);
void register_pattern(CLI::App& app);
void register_table1(CLI::App& app);

}  // namespace ic::cli
