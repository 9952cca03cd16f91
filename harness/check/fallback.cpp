// Fused-or-standard decision from a static check (see fallback.h).
#include "harness/check/fallback.h"

#include <fmt/core.h>

namespace fusecheck::check {

FallbackDecision decide_fused_or_standard(const CompatibilityResult& result, bool force_fused) {
  const std::string verdict = fmt::format("static check ({} scorer) says {} (score {:.2f}): {}",
                                          scorer_name(result.scorer), status_name(result.status),
                                          result.score, result.reason);
  FallbackDecision d;
  switch (result.status) {
    case Status::Compatible:
      d.use_fused = true;
      d.reason = "fused path: " + verdict;
      break;
    case Status::Warning:
      d.use_fused = true;
      d.warn = true;
      d.reason = "fused path, with care: " + verdict;
      break;
    case Status::Incompatible:
      d.use_fused = force_fused;
      d.warn = true;
      d.reason = force_fused ? "fused path forced by --force-fused although the " + verdict
                             : "standard path (fallback; --force-fused overrides): " + verdict;
      break;
  }
  return d;
}

}  // namespace fusecheck::check
