// Renders a CompatibilityResult as the seed-style text report, JSON (every figure, the
// thresholds and their source, the model's identity) or Markdown.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "harness/check/check.h"

namespace fusecheck::check {

enum class ReportFormat { Text, Json, Markdown };
std::optional<ReportFormat> report_format_from_name(std::string_view name);  // text|json|markdown

// `verbose` adds the per-layer, per-tensor analysis to text and Markdown (JSON always
// carries every figure).
std::string render_report(const CompatibilityResult& result, ReportFormat format, bool verbose);

}  // namespace fusecheck::check
