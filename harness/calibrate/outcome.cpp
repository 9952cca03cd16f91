// The observed-outcome rule (outcome.h, docs/calibration.md).
#include "harness/calibrate/outcome.h"

#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <fmt/core.h>

namespace fusecheck::calibrate {

OutcomeRule default_outcome_rule() { return OutcomeRule{}; }

EndToEnd end_to_end_figures(std::span<const double> kl, std::span<const double> ref_margin,
                            std::span<const double> top1_match, double margin_floor) {
  if (kl.size() != ref_margin.size() || kl.size() != top1_match.size()) {
    throw std::invalid_argument("end_to_end_figures: per-position arrays differ in length");
  }
  EndToEnd e;
  e.positions = static_cast<int>(kl.size());
  double kl_sum = 0, agree = 0, confident_agree = 0;
  for (std::size_t i = 0; i < kl.size(); ++i) {
    if (!std::isfinite(kl[i])) e.nonfinite = true;
    kl_sum += kl[i];
    agree += top1_match[i];
    if (ref_margin[i] > margin_floor) {
      ++e.confident_positions;
      confident_agree += top1_match[i];
    }
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  e.kl_mean = kl.empty() ? nan : kl_sum / static_cast<double>(kl.size());
  e.top1_all = kl.empty() ? nan : agree / static_cast<double>(kl.size());
  e.top1_confident = e.confident_positions > 0 ? confident_agree / e.confident_positions : nan;
  return e;
}

Outcome judge(const EndToEnd& e, const OutcomeRule& rule) {
  if (e.nonfinite) return {true, "non-finite logits"};
  if (e.kl_mean > rule.kl_mean_limit) {
    return {true, fmt::format("KL mean {:.3g} > {:.3g}", e.kl_mean, rule.kl_mean_limit)};
  }
  if (e.top1_confident < rule.top1_confident_min) {
    return {true, fmt::format("confident top-1 {:.3f} < {:.3f} ({} positions with margin > {:.3g})",
                              e.top1_confident, rule.top1_confident_min, e.confident_positions, rule.margin_floor)};
  }
  return {false, fmt::format("KL mean {:.3g}, confident top-1 {:.3f}", e.kl_mean, e.top1_confident)};
}

}  // namespace fusecheck::calibrate
