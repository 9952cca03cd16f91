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

// Relative error per bucket, keyed by (age_lo, age_hi); empty when absent or malformed.
std::map<std::pair<double, double>, double> kv_age_errors(const H5Node* kv_age) {
  std::map<std::pair<double, double>, double> out;
  if (!kv_age) return out;
  const H5Value* lo = kv_age->dataset("age_lo");
  const H5Value* hi = kv_age->dataset("age_hi");
  const H5Value* err = kv_age->dataset("rel_error");
  if (!lo || !hi || !err || !lo->is_number() || !hi->is_number() || !err->is_number()) return out;
  if (lo->numbers.size() != err->numbers.size() || hi->numbers.size() != err->numbers.size()) return out;
  for (std::size_t i = 0; i < err->numbers.size(); ++i) out[{lo->numbers[i], hi->numbers[i]}] = err->numbers[i];
  return out;
}

}  // namespace

void compare_kv_age(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings) {
  const H5Node* base_paths = base_root.group("paths");
  const H5Node* fresh_paths = fresh_root.group("paths");
  if (!fresh_paths || !base_paths) return;
  for (const auto& [label, fresh_path] : fresh_paths->groups) {
    const H5Node* base_path = base_paths->group(label);
    if (!base_path) continue;
    const auto before = kv_age_errors(base_path->group("kv_age"));
    for (const auto& [ages, now] : kv_age_errors(fresh_path.group("kv_age"))) {
      const auto it = before.find(ages);
      if (it == before.end() || !(it->second > 0)) continue;
      // Emulated-cpu is deterministic for the same inputs up to FP32 GEMM order (~1e-6
      // relative), so any growth beyond kKvAgeGrowth is a change of the recipe or model.
      if (!(now <= kKvAgeGrowth * it->second)) {
        findings.push_back({Severity::regression, "fp8",
                            fmt::format("{} kv_age {}-{}", label, ages.first, ages.second),
                            fmt::format("FP8 KV error at key ages {}-{}: {:.3g}, baseline {:.3g} (x{:.2f})", ages.first,
                                        ages.second, now, it->second, now / it->second)});
      }
    }
  }
}

void compare_scale_delivery(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings) {
  const H5Node* base_paths = base_root.group("paths");
  const H5Node* fresh_paths = fresh_root.group("paths");
  if (!fresh_paths) return;
  for (const auto& [label, fresh_path] : fresh_paths->groups) {
    const H5Node* now = fresh_path.group("scale_delivery");
    if (!now) continue;
    const std::string verdict = now->attr_string("verdict").value_or("missing");
    if (verdict == "pass") continue;
    const H5Node* base_path = base_paths ? base_paths->group(label) : nullptr;
    const H5Node* before = base_path ? base_path->group("scale_delivery") : nullptr;
    const std::string was = before ? before->attr_string("verdict").value_or("missing") : "not run";
    if (was != "pass" && was != "not run") continue;  // failing before too: no change
    findings.push_back({Severity::regression, "fp8", label + " scale_delivery",
                        fmt::format("FP8 KV scale delivery check: {} (baseline: {}); limit {:.3g}", verdict, was,
                                    now->attr_number("limit").value_or(std::nan("")))});
  }
}

void compare_fp8_clipping(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings) {
  const H5Node* base_paths = base_root.group("paths");
  const H5Node* fresh_paths = fresh_root.group("paths");
  if (!fresh_paths) return;
  for (const auto& [label, fresh_path] : fresh_paths->groups) {
    const H5Node* base_path = base_paths ? base_paths->group(label) : nullptr;
    // The measured run, and greedy decoding alone (docs/results-format.md).
    for (const char* group : {"recipe_headroom", "greedy_headroom"}) {
      const auto now = fp8_clips(fresh_path.group(group));
      if (now.empty()) continue;
      const bool greedy = std::string(group) == "greedy_headroom";
      const auto before = fp8_clips(base_path ? base_path->group(group) : nullptr);
      for (const auto& [key, count] : now) {
        const auto it = before.find(key);
        const double was = it == before.end() || std::isnan(it->second) ? 0 : it->second;
        if (count > 0 && !(was > 0)) {
          findings.push_back({Severity::regression, "fp8",
                              fmt::format("{}{} L{} {}", label, greedy ? " greedy" : "", key.first, key.second),
                              fmt::format("FP8 clipping{}: {} values saturated at 448, none in the baseline",
                                          greedy ? " during greedy decoding" : "", count)});
        }
      }
    }
  }
}

}  // namespace fusecheck::results
