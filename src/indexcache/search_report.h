#pragma once
// The greedy search's loss curve as a picture: LM loss against the number of F layers kept, from
// the search's JSON (indexcache search --json), with the all-F and dense losses as reference
// lines and the 1/2, 1/4, 1/8 points named in the legend.
#include <string>

#include <nlohmann/json.hpp>

namespace ic {

// `search`: the object `indexcache search --json` writes; `source` (its file) starts every error.
// Fails with a clear error when a field the curve needs is missing or of the wrong type.
std::string search_loss_curve_svg(const nlohmann::json& search, const std::string& source = "search report");

}  // namespace ic
