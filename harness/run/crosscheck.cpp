// Cross-check of static scores against observed per-layer error (see crosscheck.h).
#include "harness/run/crosscheck.h"

#include <cmath>

#include "harness/check/check.h"

namespace fusecheck::run {

StaticFigures static_figures(const check::CompatibilityResult& result, int n_layers) {
  StaticFigures f;
  f.scorer = std::string(check::scorer_name(result.scorer));
  f.status = std::string(check::status_name(result.status));
  f.score = result.score;
  f.estimated_amplification = result.estimated_amplification;
  f.reason = result.reason;
  f.layer_figure.assign(n_layers, kNaN);
  for (const auto& layer : result.layers) {
    if (layer.layer >= 0 && layer.layer < n_layers) f.layer_figure[layer.layer] = layer.amplification;
  }
  return f;
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::BF16: return std::ldexp(1.0, -8);
    case DType::F16: return std::ldexp(1.0, -11);
    case DType::F32: return std::ldexp(1.0, -24);
    case DType::F64: return std::ldexp(1.0, -53);
  }
  return kNaN;
}

const PathResult* observed_path(const RunResult& run) {
  for (const auto& p : run.paths) {
    if (p.slot.role == "fused") {
      return &p;
    }
  }
  return nullptr;
}

CrossCheck cross_check(const StaticFigures& figures, const PathResult* observed) {
  CrossCheck c;
  c.scorer = figures.scorer;
  c.static_figure = figures.layer_figure;
  c.predicted_incompatible = figures.status == "INCOMPATIBLE";
  if (!observed || !observed->propagated) {
    c.verdict = "unobserved";
    c.observed.assign(figures.layer_figure.size(), kNaN);
    return c;
  }
  c.path = observed->slot.label();
  const double u = unit_roundoff(observed->slot.dtype);
  for (double e : observed->amplification.local_error) c.observed.push_back(e / u);
  c.spearman = spearman(c.static_figure, c.observed);
  c.observed_divergent = observed->propagated->gate_failures > 0;
  if (c.predicted_incompatible == c.observed_divergent) {
    c.verdict = "agree";
  } else {
    c.verdict = c.predicted_incompatible ? "false alarm" : "miss";
  }
  return c;
}

}  // namespace fusecheck::run
