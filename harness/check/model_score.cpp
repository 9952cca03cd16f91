// How the fusecheck scorer aggregates (check.h): the depth figure from the layers' q/k
// amplifications, and the model's score from its components' scores. One home for both,
// so `fusecheck check` and calibration (which rescores sweep sidecars) agree exactly.
// The choices and the sweep runs they were chosen on: docs/static-score.md.
#include <algorithm>
#include <cmath>

#include "harness/check/check.h"

namespace fusecheck::check {

namespace {

// w_i = (1 - i/n)^p: the share of the depth still ahead of layer i, to the power p. 0 is
// the plain geometric mean (every layer alike).
constexpr double kDepthPositionExponent = 0.0;

// Whether elevated sources of error add (ModelScore), and how.
enum class Combine { Worst, Sum, Quadrature };
constexpr Combine kCombine = Combine::Worst;

}  // namespace

double qk_depth_figure(std::span<const double> qk_per_layer) {
  const auto n = static_cast<double>(qk_per_layer.size());
  if (qk_per_layer.empty()) return 1.0;
  double sum = 0;
  for (std::size_t i = 0; i < qk_per_layer.size(); ++i) {
    const double w = kDepthPositionExponent == 0.0 ? 1.0 : std::pow(1.0 - static_cast<double>(i) / n, kDepthPositionExponent);
    sum += w * std::log(std::max(qk_per_layer[i], 1.0));
  }
  return std::exp(sum / n);
}

int ModelScore::source_of(std::string_view component) {
  if (component == "model.qk_depth") return 0;
  if (component == "final_norm.gain") return 1;
  if (component == "attn_norm.gain" || component == "mlp_norm.gain") return 2;
  if (component == "mlp.super_weight") return 3;
  return -1;
}

void ModelScore::add(std::string_view component, double score) {
  worst_ = std::min(worst_, score);
  const int s = source_of(component);
  if (s >= 0) source_worst_[static_cast<std::size_t>(s)] = std::min(source_worst_[static_cast<std::size_t>(s)], score);
}

double ModelScore::sources_score() const {
  double sum = 0, sum_sq = 0;
  for (double s : source_worst_) {
    const double excess = 1.0 - s;  // a ramp's log-excess over sqrt(warn), 0.5 at fail
    sum += excess;
    sum_sq += excess * excess;
  }
  switch (kCombine) {
    case Combine::Sum: return std::max(0.0, 1.0 - sum);
    case Combine::Quadrature: return std::max(0.0, 1.0 - std::sqrt(sum_sq));
    case Combine::Worst: break;
  }
  return 1.0;
}

double ModelScore::score() const { return std::min(worst_, sources_score()); }

bool ModelScore::sources_decide() const { return sources_score() < worst_; }

}  // namespace fusecheck::check
