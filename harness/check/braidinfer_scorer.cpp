// The seed's shipped checker ("braidinfer"), reproduced exactly, quirks included
// (REFERENCE.md section 1): signed max, torch's lower median, only q_norm / k_norm read,
// q ratios ignored, an absolute "extreme" test, R jumping from 1 to 0.5 at the warning
// ratio, an amplification that is arithmetic on the weights. Operation order follows the
// seed's Python so that double results match to the last bit.
#include <algorithm>

#include <fmt/core.h>

#include "harness/check/scorers.h"

namespace fusecheck::check::detail {

namespace {

// The seed's constants that no flag changes.
constexpr double kExtremeWeight = 10.0;        // EXTREME_WEIGHT_THRESHOLD (absolute, not "10x")
constexpr double kMaxWeightFull = 20.0;        // M = 1 up to here
constexpr double kMaxWeightZero = 50.0;        // M = 0 above here
constexpr double kExpectedKernelError = 0.001; // EXPECTED_KERNEL_ERROR

NormStats stats_or_ones(const std::optional<NamedWeights>& w, NormRole role) {
  NormStats s;
  if (w) {
    s = signed_stats(w->values);
    s.tensor = w->tensor;
  } else {
    // The seed's "(1.0, 1.0, 1.0)" for a missing norm of a layer that has the other one.
    s.max = s.median = s.ratio = s.mean = s.rms = 1.0;
    s.assumed_ones = true;
  }
  s.role = role;
  return s;
}

double ratio_score(double r, const BraidinferThresholds& t) {
  if (r > t.safe_ratio) return 0.0;
  if (r > t.warning_ratio) return 0.5 * (t.safe_ratio - r) / (t.safe_ratio - t.warning_ratio);
  return 1.0;
}

double extreme_fraction_score(double x) {
  if (x > 0.5) return 0.0;
  if (x > 0.3) return 1.0 - 2 * (x - 0.3);
  return 1.0;
}

double max_weight_score(double w) {
  if (w > kMaxWeightZero) return 0.0;
  if (w > kMaxWeightFull) return (kMaxWeightZero - w) / 30.0;
  return 1.0;
}

std::vector<std::string> recommendations(Status status, const std::vector<LayerResult>& layers) {
  std::vector<std::string> r;
  switch (status) {
    case Status::Incompatible:
      r.emplace_back("Use standard kernels only");
      r.emplace_back("Consider model quantization or pruning to reduce weight magnitudes");
      break;
    case Status::Warning:
      r.emplace_back("Test thoroughly before using fused kernels in production");
      r.emplace_back("Monitor generation quality for anomalies");
      break;
    case Status::Compatible:
      r.emplace_back("Model is compatible with fused kernels");
      break;
  }
  std::vector<int> extreme;
  for (const auto& l : layers) {
    if (l.extreme && extreme.size() < 3) extreme.push_back(l.layer);
  }
  if (!extreme.empty()) r.push_back(fmt::format("Layers {} have particularly extreme weights", python_int_list(extreme)));
  return r;
}

}  // namespace

std::string python_int_list(std::span<const int> values) {
  std::string s = "[";
  for (std::size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

CompatibilityResult score_braidinfer(const ModelNormWeights& weights, const Thresholds& thresholds) {
  CompatibilityResult res;
  res.scorer = Scorer::Braidinfer;
  res.thresholds = thresholds;

  for (const auto& lw : weights.layers) {
    if (!lw.k_norm && !lw.q_norm) continue;  // layers without q/k norms are not analysed
    LayerResult layer;
    layer.layer = lw.layer;
    layer.norms.push_back(stats_or_ones(lw.k_norm, NormRole::KNorm));
    layer.norms.push_back(stats_or_ones(lw.q_norm, NormRole::QNorm));
    const double max_k = layer.norms[0].max, max_q = layer.norms[1].max;
    layer.extreme = max_k > kExtremeWeight || max_q > kExtremeWeight;
    if (layer.extreme) layer.amplification = 1.0 + kExpectedKernelError * ((max_k + max_q) / 2.0);
    res.layers.push_back(std::move(layer));
  }

  const StatusCutoffs seed_cutoffs;  // 0.5 / 0.8, fixed in the seed
  int n_extreme = 0;
  double max_k_weight = 0;
  if (res.layers.empty()) {
    res.score = 1.0;
    res.status = Status::Compatible;
  } else {
    double r = res.layers[0].norms[0].ratio;
    double w = res.layers[0].norms[0].max;
    for (const auto& l : res.layers) {
      r = std::max(r, l.norms[0].ratio);
      w = std::max(w, l.norms[0].max);
      n_extreme += l.extreme ? 1 : 0;
    }
    max_k_weight = w;
    const double x = static_cast<double>(n_extreme) / static_cast<double>(res.layers.size());
    const double R = ratio_score(r, thresholds.braidinfer);
    const double E = extreme_fraction_score(x);
    const double M = max_weight_score(w);
    res.components = {{"ratio", -1, r, R, 0, 0},
                      {"extreme_fraction", -1, x, E, 0, 0},
                      {"max_weight", -1, w, M, 0, 0}};
    res.score = R * 0.4 + E * 0.3 + M * 0.3;
    res.status = status_from_score(res.score, seed_cutoffs);
  }

  // The seed's product over extreme layers, in layer order.
  double amplification = 1.0;
  for (const auto& l : res.layers) {
    if (l.extreme) amplification *= (1.0 + kExpectedKernelError * ((l.norms[0].max + l.norms[1].max) / 2.0));
  }
  res.estimated_amplification = amplification;

  if (n_extreme == 0) {
    res.reason = "Model weights are within normal ranges.";
  } else {
    res.reason = fmt::format(
        "Found {}/{} layers with extreme weights; Maximum weight: {:.1f}; Estimated error amplification: {:.1f}x",
        n_extreme, res.layers.size(), max_k_weight, amplification);
  }
  res.recommendations = recommendations(res.status, res.layers);
  return res;
}

}  // namespace fusecheck::check::detail
