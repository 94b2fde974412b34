#pragma once
// Options and helpers shared by the subcommands.
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "model/llama.h"

namespace ic::cli {

struct ModelOptions {
  std::string model;       // -m; default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf
  int threads = 0;         // -t; 0: all cores
  std::string device = "cpu";
};

void add_model_options(CLI::App* cmd, ModelOptions& o);
// Applies the thread count and loads the model, reporting the load on stderr.
std::unique_ptr<LlamaModel> load_model(const ModelOptions& o, bool quiet = false);
std::string resolve_model_path(const std::string& given);  // -m, else $IC_MODEL, else the default
std::string read_file(const std::string& path);
double peak_rss_mib();

void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_bench(CLI::App& app);

}  // namespace ic::cli
