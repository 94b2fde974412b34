#include "common.h"

#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ic::cli {

void add_model_options(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("-m,--model", o.model, "GGUF model file (default: $IC_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  cmd->add_option("-t,--threads", o.threads, "CPU threads (default: all cores)");
  cmd->add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
}

std::unique_ptr<LlamaModel> load_model(const ModelOptions& o, bool quiet) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const std::string path = resolve_model_path(o.model);
  const Device dev = o.device == "cuda" ? Device::CUDA : Device::CPU;
  const auto t0 = std::chrono::steady_clock::now();
  auto m = LlamaModel::load(path, dev);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!quiet) {
    const LlamaConfig& c = m->config();
    std::fprintf(stderr, "loaded %s: %lld layers, width %lld, %lld/%lld heads, vocab %lld, %.1f MiB of weights on %s, %.2f s, %d threads\n",
                 path.c_str(), (long long)c.n_layers, (long long)c.dim, (long long)c.n_heads,
                 (long long)c.n_kv_heads, (long long)c.vocab, m->weight_bytes() / 1048576.0,
                 std::string(device_name(dev)).c_str(), s, omp_get_max_threads());
  }
  return m;
}

std::string resolve_model_path(const std::string& given) {
  if (!given.empty()) return given;
  const char* env = std::getenv("IC_MODEL");
  return env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IC_CHECK(in.good(), "cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

}  // namespace ic::cli
