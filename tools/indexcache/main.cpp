// indexcache: the command line. Each subcommand lives in its own cmd_*.cpp.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"indexcache: DSA sparse attention with cross-layer index reuse"};
  app.require_subcommand(1);
  ic::cli::register_generate(app);
  ic::cli::register_perplexity(app);
  ic::cli::register_tokenize(app);
  ic::cli::register_bench(app);
  ic::cli::register_init_indexers(app);
  ic::cli::register_distill(app);
  ic::cli::register_eval(app);
  ic::cli::register_overlap(app);
  ic::cli::register_search(app);
  ic::cli::register_pattern(app);
  ic::cli::register_table1(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ic::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
