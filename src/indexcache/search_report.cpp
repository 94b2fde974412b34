#include "indexcache/search_report.h"

#include <vector>

#include "core/error.h"
#include "io/svg.h"

namespace ic {

std::string search_loss_curve_svg(const nlohmann::json& j) {
  IC_CHECK(j.is_object() && j.contains("trajectory") && j.contains("all_f_loss") && j.contains("config"),
           "search report: not a search JSON (needs trajectory, all_f_loss and config)");
  const auto& cfg = j.at("config");
  const double n_layers = cfg.at("n_layers").get<double>();
  svg::Series greedy{"greedy search (measured)", {n_layers}, {j.at("all_f_loss").get<double>()}};
  for (const auto& s : j.at("trajectory")) {
    greedy.x.push_back(s.at("n_full").get<double>());
    greedy.y.push_back(s.at("loss").get<double>());
  }
  IC_CHECK(greedy.x.size() >= 2, "search report: the trajectory is empty");
  std::vector<svg::Series> series{greedy};
  const double lo = greedy.x.back(), hi = n_layers;
  series.push_back({"all F (DSA)", {lo, hi}, {j.at("all_f_loss").get<double>(), j.at("all_f_loss").get<double>()}});
  if (j.contains("dense_loss"))
    series.push_back({"dense", {lo, hi}, {j.at("dense_loss").get<double>(), j.at("dense_loss").get<double>()}});
  svg::LineChartOptions opt;
  opt.title = "Greedy IndexCache search: calibration loss vs F layers kept";
  opt.x_label = "F layers kept (of " + std::to_string(static_cast<int>(n_layers)) + "); calibration " +
                std::to_string(cfg.value("windows", 0)) + " x " + std::to_string(cfg.value("ctx", 0)) + " tokens, top-k " +
                std::to_string(cfg.value("topk", 0));
  opt.y_label = "mean NLL (nats)";
  return svg::line_chart(series, opt);
}

}  // namespace ic
