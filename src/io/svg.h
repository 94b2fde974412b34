#pragma once
// Small SVG writers for reports (no dependency): a heatmap with a colour-scale legend and
// marked rows/columns, and a line chart. Each returns a complete standalone SVG document.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ic::svg {

std::string escape(std::string_view text);  // for XML text and attribute values

struct HeatmapOptions {
  std::string title;
  std::vector<std::string> row_labels, col_labels;  // empty: 0, 1, 2, ...
  std::vector<bool> marked;   // [max(rows, cols)]: rows/columns drawn with a marker (may be empty)
  std::string marked_legend;  // what a marker means ("F layer of FSSF...")
  std::string value_label;    // caption of the colour scale
  double vmin = 0.0, vmax = 1.0;
  int cell = 18;              // pixels per cell
};
// values: [rows * cols] row-major; row 0 at the top. Colours: a viridis-like ramp, vmin dark.
std::string heatmap(const std::vector<double>& values, int64_t rows, int64_t cols, const HeatmapOptions& opt);

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length
};
struct LineChartOptions {
  std::string title, x_label, y_label;
  int width = 640, height = 400;
};
// Axes span the data's range (y padded by 5 %), with about 5 ticks each and a legend of series.
std::string line_chart(const std::vector<Series>& series, const LineChartOptions& opt);

// The colour of t in [0, 1] on the heatmap's ramp, "#rrggbb".
std::string ramp_colour(double t);

}  // namespace ic::svg
