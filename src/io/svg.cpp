#include "io/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"

namespace ic::svg {

namespace {
const char* kFont = "font-family=\"sans-serif\"";

// Tick values for [lo, hi]: a 1/2/5 x 10^e step giving about n ticks.
std::vector<double> ticks(double lo, double hi, int n) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  // A range too wide for doubles (inf step) or too narrow for its magnitude (lo + step == lo, as
  // for 1e17 .. 1e17 + 16) would never end: the ends only, then.
  if (!std::isfinite(step) || lo + step == lo || hi - step == hi) return {lo, hi};
  std::vector<double> out;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9 && out.size() < 4 * static_cast<size_t>(n) + 4; v += step)
    out.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return out;
}

std::string num(double v) { return fmt::format("{:g}", v); }

const std::array<const char*, 8> kSeriesColours = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};
}  // namespace

std::string escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ramp_colour(double t) {
  // Anchors of matplotlib's viridis at 0, 1/4, 1/2, 3/4, 1; linear in between.
  static const double anchors[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::isfinite(t) ? std::clamp(t, 0.0, 1.0) : 0.0;
  const double f = t * 4.0;
  const int i = std::min(3, static_cast<int>(f));
  const double u = f - i;
  int c[3];
  for (int j = 0; j < 3; ++j) c[j] = static_cast<int>(std::lround(anchors[i][j] + u * (anchors[i + 1][j] - anchors[i][j])));
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

std::string heatmap(const std::vector<double>& values, int64_t rows, int64_t cols, const HeatmapOptions& opt) {
  IC_CHECK(rows > 0 && cols > 0 && static_cast<int64_t>(values.size()) == rows * cols,
           "svg heatmap: {} values for {} x {} cells", values.size(), rows, cols);
  IC_CHECK(opt.vmax > opt.vmin, "svg heatmap: empty value range [{}, {}]", opt.vmin, opt.vmax);
  const int c = opt.cell;
  const int left = 60, top = opt.title.empty() ? 20 : 44, legend_w = 110;
  const int grid_w = static_cast<int>(cols) * c, grid_h = static_cast<int>(rows) * c;
  const int width = left + grid_w + 20 + legend_w, height = top + grid_h + 60;
  auto label = [](const std::vector<std::string>& labels, int64_t i) {
    return i < static_cast<int64_t>(labels.size()) ? labels[i] : std::to_string(i);
  };
  auto is_marked = [&](int64_t i) { return i < static_cast<int64_t>(opt.marked.size()) && opt.marked[i]; };
  std::string s = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      width, height);
  if (!opt.title.empty())
    s += fmt::format("<text x=\"{}\" y=\"24\" {} font-size=\"15\">{}</text>\n", left, kFont, escape(opt.title));
  const double span = opt.vmax - opt.vmin;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < cols; ++q) {
      const double v = values[r * cols + q];
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}, {}: {:.4f}</title></rect>\n",
                       left + q * c, top + r * c, c, c, ramp_colour((v - opt.vmin) / span), escape(label(opt.row_labels, r)),
                       escape(label(opt.col_labels, q)), v);
    }
  // Labels; marked rows and columns get a red bar beside the label and a bold label.
  const int fs = std::max(7, std::min(12, c - 6));
  for (int64_t r = 0; r < rows; ++r) {
    const bool m = is_marked(r);
    s += fmt::format("<text x=\"{}\" y=\"{}\" {} font-size=\"{}\" text-anchor=\"end\"{}>{}</text>\n", left - 8,
                     top + r * c + c / 2 + fs / 3, kFont, fs, m ? " font-weight=\"bold\"" : "", escape(label(opt.row_labels, r)));
    if (m) s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"4\" height=\"{}\" fill=\"#d62728\"/>\n", left - 6, top + r * c, c);
  }
  for (int64_t q = 0; q < cols; ++q) {
    const bool m = is_marked(q);
    const int x = left + static_cast<int>(q) * c + c / 2, y = top + grid_h + 8 + fs;
    s += fmt::format("<text x=\"{}\" y=\"{}\" {} font-size=\"{}\" text-anchor=\"middle\"{}>{}</text>\n", x, y, kFont, fs,
                     m ? " font-weight=\"bold\"" : "", escape(label(opt.col_labels, q)));
    if (m)
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"4\" fill=\"#d62728\"/>\n", left + q * c, top + grid_h + 2, c);
  }
  if (!opt.marked_legend.empty())
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"#d62728\"/>"
                     "<text x=\"{}\" y=\"{}\" {} font-size=\"11\">{}</text>\n",
                     left, top + grid_h + 36, left + 16, top + grid_h + 41, kFont, escape(opt.marked_legend));
  // Colour scale: a column of thin bands from vmax (top) to vmin, with ticks.
  const int lx = left + grid_w + 20, bar_h = std::max(grid_h, 100), bands = 64;
  for (int i = 0; i < bands; ++i) {
    const double t = 1.0 - (i + 0.5) / bands;
    s += fmt::format("<rect x=\"{}\" y=\"{:.2f}\" width=\"16\" height=\"{:.2f}\" fill=\"{}\"/>\n", lx,
                     top + i * bar_h / static_cast<double>(bands), bar_h / static_cast<double>(bands) + 0.5, ramp_colour(t));
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"16\" height=\"{}\" fill=\"none\" stroke=\"black\" stroke-width=\"0.5\"/>\n",
                   lx, top, bar_h);
  for (double v : ticks(opt.vmin, opt.vmax, 5)) {
    const double y = top + bar_h * (1.0 - (v - opt.vmin) / span);
    s += fmt::format("<line x1=\"{}\" y1=\"{:.2f}\" x2=\"{}\" y2=\"{:.2f}\" stroke=\"black\"/>"
                     "<text x=\"{}\" y=\"{:.2f}\" {} font-size=\"10\">{}</text>\n",
                     lx + 16, y, lx + 20, y, lx + 23, y + 3.5, kFont, num(v));
  }
  if (!opt.value_label.empty())
    s += fmt::format("<text x=\"{}\" y=\"{}\" {} font-size=\"11\">{}</text>\n", lx, top + bar_h + 16, kFont,
                     escape(opt.value_label));
  s += "</svg>\n";
  return s;
}

std::string line_chart(const std::vector<Series>& series, const LineChartOptions& opt) {
  IC_CHECK(!series.empty(), "svg line chart: no series");
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& sr : series) {
    IC_CHECK(sr.x.size() == sr.y.size(), "svg line chart: series '{}' has {} x and {} y values", sr.name, sr.x.size(),
             sr.y.size());
    for (size_t i = 0; i < sr.x.size(); ++i) {
      if (!std::isfinite(sr.x[i]) || !std::isfinite(sr.y[i])) continue;
      x0 = std::min(x0, sr.x[i]), x1 = std::max(x1, sr.x[i]);
      y0 = std::min(y0, sr.y[i]), y1 = std::max(y1, sr.y[i]);
    }
  }
  IC_CHECK(x0 <= x1, "svg line chart: no finite points");
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;
  const int left = 70, right = 20, top = opt.title.empty() ? 20 : 40, bottom = 50;
  const int pw = opt.width - left - right, ph = opt.height - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1.0 - (y - y0) / (y1 - y0)) * ph; };
  std::string s = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      opt.width, opt.height);
  if (!opt.title.empty())
    s += fmt::format("<text x=\"{}\" y=\"24\" {} font-size=\"15\">{}</text>\n", left, kFont, escape(opt.title));
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", left, top, pw, ph);
  for (double v : ticks(x0, x1, 6))
    s += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\" stroke=\"black\"/>"
                     "<text x=\"{0:.2f}\" y=\"{3}\" {4} font-size=\"10\" text-anchor=\"middle\">{5}</text>\n",
                     px(v), top + ph, top + ph + 4, top + ph + 16, kFont, num(v));
  for (double v : ticks(y0, y1, 5))
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.2f}\" x2=\"{2}\" y2=\"{1:.2f}\" stroke=\"black\"/>"
                     "<text x=\"{3}\" y=\"{4:.2f}\" {5} font-size=\"10\" text-anchor=\"end\">{6}</text>\n",
                     left - 4, py(v), left, left - 6, py(v) + 3.5, kFont, num(v));
  if (!opt.x_label.empty())
    s += fmt::format("<text x=\"{}\" y=\"{}\" {} font-size=\"12\" text-anchor=\"middle\">{}</text>\n", left + pw / 2,
                     opt.height - 12, kFont, escape(opt.x_label));
  if (!opt.y_label.empty())
    s += fmt::format("<text x=\"14\" y=\"{0}\" {1} font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {0})\">{2}</text>\n",
                     top + ph / 2, kFont, escape(opt.y_label));
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& sr = series[k];
    const char* colour = kSeriesColours[k % kSeriesColours.size()];
    std::string pts;
    for (size_t i = 0; i < sr.x.size(); ++i)
      if (std::isfinite(sr.x[i]) && std::isfinite(sr.y[i])) pts += fmt::format("{:.2f},{:.2f} ", px(sr.x[i]), py(sr.y[i]));
    s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n", pts, colour);
  }
  // The legend inside the plot's top-right corner, on white, as wide as its longest name
  // (about 6.5 px per character at 11 px).
  size_t longest = 0;
  for (const Series& sr : series) longest = std::max(longest, sr.name.size());
  const int lw = 34 + static_cast<int>(6.5 * static_cast<double>(longest));
  const int lx = left + pw - lw - 6;
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"white\" fill-opacity=\"0.85\" "
                   "stroke=\"#999\"/>\n",
                   lx, top + 4, lw, 16 * static_cast<int>(series.size()) + 6);
  for (size_t k = 0; k < series.size(); ++k) {
    const char* colour = kSeriesColours[k % kSeriesColours.size()];
    const int ly = top + 16 + 16 * static_cast<int>(k);
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"/>"
                     "<text x=\"{}\" y=\"{}\" {} font-size=\"11\">{}</text>\n",
                     lx + 6, ly, lx + 26, ly, colour, lx + 30, ly + 4, kFont, escape(series[k].name));
  }
  s += "</svg>\n";
  return s;
}

}  // namespace ic::svg
