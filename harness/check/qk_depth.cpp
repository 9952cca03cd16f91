// The q/k depth figure (check.h qk_depth_figure): one home, so `fusecheck check` and
// calibration (which recomputes it from a sweep sidecar's per-layer figures) agree exactly.
// The weights and the sweep runs they were chosen on: docs/static-score.md.
#include <algorithm>
#include <cmath>

#include "harness/check/check.h"

namespace fusecheck::check {

namespace {

// Layer i of n weighs c + (1 - c)(1 - i/n)^p: the share of the depth still ahead of it,
// squared (the compounding through the layers after it), above a floor c (an error made
// late still reaches the logits). The final norm is one more stage of the product, at
// weight w_f. Chosen among p in {1, 2}, c in {0, 0.25}, w_f in {0, 1} by leave-one-family-out
// on the GPU sweep's design runs (issue 22, fourth round; docs/calibration.md); the third
// round's figure was p = 2, c = 0, w_f = 0.
constexpr double kDepthPositionExponent = 2.0;
constexpr double kDepthFloor = 0.25;
constexpr double kFinalNormWeight = 1.0;

}  // namespace

double qk_depth_figure(std::span<const double> qk_per_layer, std::optional<double> final_gain) {
  if (qk_per_layer.empty()) return 1.0;
  const auto n = static_cast<double>(qk_per_layer.size());
  double sum = 0;
  for (std::size_t i = 0; i < qk_per_layer.size(); ++i) {
    const double ahead = std::pow(1.0 - static_cast<double>(i) / n, kDepthPositionExponent);
    sum += (kDepthFloor + (1.0 - kDepthFloor) * ahead) * std::log(std::max(qk_per_layer[i], 1.0));
  }
  if (final_gain) sum += kFinalNormWeight * std::log(std::max(*final_gain, 1.0));
  return std::exp(sum / n);
}

}  // namespace fusecheck::check
