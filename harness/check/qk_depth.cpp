// The q/k depth figure (check.h qk_depth_figure): one home, so `fusecheck check` and
// calibration (which recomputes it from a sweep sidecar's per-layer figures) agree exactly.
// The position weight and the sweep runs it was chosen on: docs/static-score.md.
#include <algorithm>
#include <cmath>

#include "harness/check/check.h"

namespace fusecheck::check {

namespace {

// w_i = (1 - i/n)^p: the share of the depth still ahead of layer i, squared. Chosen
// among p = 0 (the plain geometric mean), 0.5, 1 and 2 by leave-one-family-out AUC on the
// GPU sweep's design runs (issue 22, third round; docs/calibration.md).
constexpr double kDepthPositionExponent = 2.0;

}  // namespace

double qk_depth_figure(std::span<const double> qk_per_layer) {
  if (qk_per_layer.empty()) return 1.0;
  const auto n = static_cast<double>(qk_per_layer.size());
  double sum = 0;
  for (std::size_t i = 0; i < qk_per_layer.size(); ++i) {
    const double w = std::pow(1.0 - static_cast<double>(i) / n, kDepthPositionExponent);
    sum += w * std::log(std::max(qk_per_layer[i], 1.0));
  }
  return std::exp(sum / n);
}

}  // namespace fusecheck::check
