// indexcache table1: the IndexCache paper's Table 1 on one model (runtime/table1.h): prefill time
// and decode speed per request at each context length, DSA against IndexCache patterns, with the
// indexer's share and the cache memory; a Markdown table on stdout, JSON and SVG on request.
// Made for --random-weights presets on the GPU (docs/TABLE1.md); any model of the DSA family runs.
#include <cstdio>
#include <fmt/format.h>
#include <sstream>

#include "common.h"
#include "core/error.h"
#include "runtime/table1.h"

namespace ic::cli {

namespace {

struct Table1Args {
  ModelOptions model;
  std::string lengths = "10000,60000,120000,200000";
  std::vector<std::string> configs{"dsa", "1/2", "1/4"};
  int64_t decode_steps = 32, chunk = 8192;
  uint64_t seed = 1;
  std::string json, md, prefill_svg, decode_svg;
};

std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    int64_t mult = 1;
    if (!item.empty() && (item.back() == 'K' || item.back() == 'k')) {
      mult = 1000;
      item.pop_back();
    }
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    IC_CHECK(used == item.size() && used > 0 && v > 0, "--lengths: '{}' is not a positive length (e.g. 10000 or 10K)",
             item);
    out.push_back(v * mult);
  }
  IC_CHECK(!out.empty(), "--lengths: no lengths in '{}'", s);
  return out;
}

void run(const Table1Args& a) {
  const std::vector<int64_t> lengths = parse_lengths(a.lengths);
  std::unique_ptr<Model> m = load_model(a.model);
  std::vector<Table1Config> configs;
  for (const std::string& c : a.configs) configs.push_back(parse_table1_config(c, m->info().n_layers));
  for (const Table1Config& c : configs)
    for (int64_t l : c.pattern.full_layers())
      IC_CHECK(m->has_indexer(l), "table1: config {} needs an indexer on layer {}, which {} has not", c.name, l,
               m->path());
  Table1Options o;
  o.lengths = lengths;
  o.decode_steps = a.decode_steps;
  o.chunk = a.chunk;
  o.seed = a.seed;
  o.progress = [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  };
  const Table1Result r = run_table1(*m, configs, o);
  const std::string md = table1_markdown(r);
  std::fputs(md.c_str(), stdout);
  if (!a.md.empty()) write_text(a.md, md);
  if (!a.json.empty()) write_text(a.json, table1_json(r) + "\n");
  if (!a.prefill_svg.empty()) write_text(a.prefill_svg, table1_prefill_svg(r));
  if (!a.decode_svg.empty()) write_text(a.decode_svg, table1_decode_svg(r));
}

}  // namespace

void register_table1(CLI::App& app) {
  auto a = std::make_shared<Table1Args>();
  CLI::App* cmd = app.add_subcommand(
      "table1", "The paper's Table 1: prefill time and decode speed per request against context, DSA vs IndexCache "
                "(e.g. --random-weights glm47-flash-dsa --device cuda)");
  add_model_options(cmd, a->model);
  cmd->add_option("--lengths", a->lengths, "Context lengths, comma-separated (10K = 10000)")->capture_default_str();
  cmd->add_option("--configs", a->configs, "Patterns, comma-separated: dsa (all F), 1/N (every N-th layer F) or "
                  "NAME=FSSF...")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--decode-steps", a->decode_steps, "Timed decode steps after each prefill")->capture_default_str();
  cmd->add_option("--chunk", a->chunk, "Prefill tokens per forward call")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the token ids")->capture_default_str();
  cmd->add_option("--json", a->json, "Write the rows as JSON");
  cmd->add_option("--md", a->md, "Write the Markdown table");
  cmd->add_option("--prefill-svg", a->prefill_svg, "Plot prefill seconds against context (SVG)");
  cmd->add_option("--decode-svg", a->decode_svg, "Plot decode tokens/s against context (SVG)");
  cmd->callback([a] { run(*a); });
}

}  // namespace ic::cli
