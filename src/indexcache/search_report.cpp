#include "indexcache/search_report.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "io/svg.h"

namespace ic {

namespace {
// The number at `key` of `obj` (`where` names it in errors). The JSON comes from a user's file,
// so a wrong type is an ic::Error naming the field, not nlohmann's type_error.
double number_at(const nlohmann::json& obj, const char* key, const std::string& where, const std::string& source) {
  IC_CHECK(obj.contains(key), "{}: {} has no \"{}\"", source, where, key);
  const nlohmann::json& v = obj.at(key);
  IC_CHECK(v.is_number(), "{}: {}.{} is {}, not a number", source, where, key, v.type_name());
  return v.get<double>();
}

// An optional integer field of the config for the axis caption (0 when absent or not a count).
int64_t count_or_zero(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key) || !cfg.at(key).is_number()) return 0;
  const double v = cfg.at(key).get<double>();
  return v >= 0 && v < 1e15 ? static_cast<int64_t>(v) : 0;
}
}  // namespace

std::string search_loss_curve_svg(const nlohmann::json& j, const std::string& source) {
  IC_CHECK(j.is_object() && j.contains("trajectory") && j.contains("all_f_loss") && j.contains("config"),
           "{}: not a search JSON (needs trajectory, all_f_loss and config)", source);
  const nlohmann::json& cfg = j.at("config");
  IC_CHECK(cfg.is_object(), "{}: config is {}, not an object", source, cfg.type_name());
  const double n_layers = number_at(cfg, "n_layers", "config", source);
  IC_CHECK(n_layers >= 1 && n_layers <= 1e6 && n_layers == std::floor(n_layers),
           "{}: config.n_layers = {} is not a layer count", source, n_layers);
  const double all_f = number_at(j, "all_f_loss", "the search", source);
  const nlohmann::json& traj = j.at("trajectory");
  IC_CHECK(traj.is_array(), "{}: trajectory is {}, not an array", source, traj.type_name());
  svg::Series greedy{"greedy search (measured)", {n_layers}, {all_f}};
  for (size_t i = 0; i < traj.size(); ++i) {
    const std::string where = "trajectory[" + std::to_string(i) + "]";
    IC_CHECK(traj[i].is_object(), "{}: {} is {}, not an object", source, where, traj[i].type_name());
    greedy.x.push_back(number_at(traj[i], "n_full", where, source));
    greedy.y.push_back(number_at(traj[i], "loss", where, source));
  }
  IC_CHECK(greedy.x.size() >= 2, "{}: the trajectory is empty", source);
  std::vector<svg::Series> series{greedy};
  const double lo = greedy.x.back(), hi = n_layers;
  series.push_back({"all F (DSA)", {lo, hi}, {all_f, all_f}});
  // The search writes null when it measured no dense loss (no --dense).
  if (j.contains("dense_loss") && !j.at("dense_loss").is_null()) {
    const double dense = number_at(j, "dense_loss", "the search", source);
    series.push_back({"dense", {lo, hi}, {dense, dense}});
  }
  svg::LineChartOptions opt;
  opt.title = "Greedy IndexCache search: calibration loss vs F layers kept";
  opt.x_label = "F layers kept (of " + std::to_string(static_cast<int64_t>(n_layers)) + "); calibration " +
                std::to_string(count_or_zero(cfg, "windows")) + " x " + std::to_string(count_or_zero(cfg, "ctx")) +
                " tokens, top-k " + std::to_string(count_or_zero(cfg, "topk"));
  opt.y_label = "mean NLL (nats)";
  return svg::line_chart(series, opt);
}

}  // namespace ic
