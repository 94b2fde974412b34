// libFuzzer target for the search JSON (`indexcache search --json`) and its two readers: the
// loss-curve SVG of `indexcache search-plot` (search_loss_curve_svg, src/indexcache/search_report.h)
// and a pattern named search=FILE:KEY (PatternChoice, src/indexcache/eval_config.h), which reads
// the file itself. Any byte string must give an SVG / a pattern or throw ic::Error; the text that
// nlohmann does not parse (a syntax error, a number beyond double) is refused by search-plot with
// "not valid JSON" (its json::exception handler), as here.
//
// Seeds: fuzz/corpus/search_json/ holds a JSON `indexcache search` wrote for the tiny GLM-DSA test
// checkpoint (tests/data/hf/glm_moe_dsa-tiny) and small hand-made variants of it.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "indexcache/eval_config.h"
#include "indexcache/search_report.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// A pattern of the file by KEY, for a model of n_layers; ic::Error is the expected refusal.
void resolve(const std::string& path, const std::string& key, int64_t n_layers) {
  try {
    const ic::PatternChoice c = ic::PatternChoice::parse("search=" + path + ":" + key);
    const std::optional<ic::LayerPattern> p = c.resolve(n_layers);
    check(p && p->n_layers() == n_layers);
  } catch (const ic::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  const std::string path = dir + "/ic_fuzz_search_" + std::to_string(::getpid()) + ".json";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  nlohmann::json j;
  bool parsed = true;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {  // what search-plot catches around parse
    parsed = false;
  }
  if (parsed) {
    try {
      const std::string svg = ic::search_loss_curve_svg(j);
      check(svg.find("</svg>") != std::string::npos);
    } catch (const ic::Error&) {
    }
  }
  // The keys the search writes, and every key the file itself has (a handful at most: the
  // fuzzer's inputs are small), for the model the search ran on and one of 4 layers.
  std::vector<std::string> keys = {"1/2", "1/4", "x"};
  if (parsed && j.is_object() && j.contains("patterns") && j["patterns"].is_object())
    for (const auto& [k, v] : j["patterns"].items())
      if (keys.size() < 16 && !k.empty()) keys.push_back(k);
  for (const std::string& k : keys) {
    resolve(path, k, 4);
    resolve(path, k, 3);
  }
  std::filesystem::remove(path);
  return 0;
}
