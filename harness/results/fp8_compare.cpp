// New FP8 clipping between two runs (see fp8_compare.h).
#include "harness/results/fp8_compare.h"

#include <cmath>
#include <map>
#include <string>

#include <fmt/core.h>

namespace fusecheck::results {

namespace {

// Clip counts per (layer row, FP8 point) of one path; empty when the path has none.
std::map<std::pair<std::size_t, std::string>, double> fp8_clips(const H5Node* headroom) {
  std::map<std::pair<std::size_t, std::string>, double> out;
  if (!headroom) return out;
  const H5Value* points = headroom->dataset("points");
  const H5Value* counts = headroom->dataset("saturation_count");
  if (!points || !counts || !points->is_string() || !counts->is_number() || counts->dims.size() != 2) return out;
  const std::size_t rows = counts->dims[0], cols = counts->dims[1];
  if (cols != points->strings.size() || counts->numbers.size() != rows * cols) return out;
  for (std::size_t c = 0; c < cols; ++c) {
    const std::string& name = points->strings[c];
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".fp8") != 0) continue;
    // The last row is the head: no KV cache there.
    for (std::size_t r = 0; r + 1 < rows; ++r) out[{r, name}] = counts->numbers[r * cols + c];
  }
  return out;
}

}  // namespace

void compare_fp8_clipping(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings) {
  const H5Node* base_paths = base_root.group("paths");
  const H5Node* fresh_paths = fresh_root.group("paths");
  if (!fresh_paths) return;
  for (const auto& [label, fresh_path] : fresh_paths->groups) {
    const auto now = fp8_clips(fresh_path.group("recipe_headroom"));
    if (now.empty()) continue;
    const H5Node* base_path = base_paths ? base_paths->group(label) : nullptr;
    const auto before = fp8_clips(base_path ? base_path->group("recipe_headroom") : nullptr);
    for (const auto& [key, count] : now) {
      const auto it = before.find(key);
      const double was = it == before.end() || std::isnan(it->second) ? 0 : it->second;
      if (count > 0 && !(was > 0)) {
        findings.push_back({Severity::regression, "fp8", fmt::format("{} L{} {}", label, key.first, key.second),
                            fmt::format("FP8 clipping: {} values saturated at 448, none in the baseline", count)});
      }
    }
  }
}

}  // namespace fusecheck::results
