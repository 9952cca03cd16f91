// The fusecheck scorer: every norm tensor, absolute values, an error-propagation model of
// what each norm does to a rounding error (docs/static-score.md), and a score that is the
// minimum of continuous log-space ramps, so one extreme figure can reach INCOMPATIBLE.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/core.h>

#include "harness/check/scorers.h"
#include "harness/core/error.h"

namespace fusecheck::check::detail {

namespace {

// rms_i(wq_i * wk_i): the gain of the attention logit's rounding error over a model with
// unit q/k norm weights. A missing one of the pair counts as all ones (the seed's rule).
double qk_amplification(const LayerNormWeights& lw) {
  const std::vector<double>* q = lw.q_norm ? &lw.q_norm->values : nullptr;
  const std::vector<double>* k = lw.k_norm ? &lw.k_norm->values : nullptr;
  if (q && k && q->size() != k->size()) {
    throw InputError(lw.k_norm->tensor, fmt::format("k_norm has {} values but q_norm ({}) has {}: the "
                                                    "per-head norms must have the same head_dim",
                                                    k->size(), lw.q_norm->tensor, q->size()));
  }
  const std::size_t n = q ? q->size() : k->size();
  double sum_sq = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double p = (q ? (*q)[i] : 1.0) * (k ? (*k)[i] : 1.0);
    sum_sq += p * p;
  }
  return std::sqrt(sum_sq / static_cast<double>(n));
}

struct Scoring {
  const Thresholds& t;
  std::vector<Component>& components;

  double add(std::string name, int layer, double value, const Ramp& ramp) {
    const double s = ramp_score(value, ramp, t.status);
    components.push_back({std::move(name), layer, value, s, ramp.warn, ramp.fail});
    return s;
  }
  bool flagged(double score) const { return score < t.status.warning_below; }
};

NormStats analyse(const NamedWeights& w, NormRole role, int layer, Scoring& sc) {
  NormStats s = absolute_stats(w.values);
  s.role = role;
  s.tensor = w.tensor;
  const std::string name(norm_role_name(role));
  double worst = sc.add(name + ".ratio", layer, s.ratio, sc.t.norm_ratio);
  if (role == NormRole::AttnNorm || role == NormRole::MlpNorm) {
    worst = std::min(worst, sc.add(name + ".gain", layer, s.peak_gain, sc.t.hidden_norm_gain));
  } else if (role == NormRole::FinalNorm) {
    worst = std::min(worst, sc.add(name + ".gain", layer, s.peak_gain, final_norm_gain_ramp(sc.t)));
  }
  s.extreme = sc.flagged(worst);
  return s;
}

std::string describe(const Component& c) {
  const std::string where = c.layer >= 0 ? fmt::format("layer {} ", c.layer) : std::string();
  return fmt::format("{}{} = {:.2f} (warn {:g}, fail {:g})", where, c.name, c.value, c.warn, c.fail);
}

}  // namespace

CompatibilityResult score_fusecheck(const ModelNormWeights& weights, const Thresholds& thresholds) {
  CompatibilityResult res;
  res.scorer = Scorer::Fusecheck;
  res.thresholds = thresholds;
  Scoring sc{thresholds, res.components};

  double sum_sq_amplification = 0;
  std::vector<double> qk_per_layer;
  int stages = 0;
  int n_tensors = 0;
  for (const auto& lw : weights.layers) {
    LayerResult layer;
    layer.layer = lw.layer;
    double amplification = 0;
    bool has_norm = false;
    const std::pair<const std::optional<NamedWeights>*, NormRole> in_order[] = {
        {&lw.attn_norm, NormRole::AttnNorm}, {&lw.q_norm, NormRole::QNorm},
        {&lw.k_norm, NormRole::KNorm}, {&lw.mlp_norm, NormRole::MlpNorm}};
    for (const auto& [w, role] : in_order) {
      if (!*w) continue;
      layer.norms.push_back(analyse(**w, role, lw.layer, sc));
      layer.extreme = layer.extreme || layer.norms.back().extreme;
      if (role == NormRole::AttnNorm || role == NormRole::MlpNorm) {
        amplification = std::max(amplification, layer.norms.back().peak_gain);
      }
      has_norm = true;
      ++n_tensors;
    }
    if (lw.q_norm || lw.k_norm) {
      layer.qk_amplification = qk_amplification(lw);
      qk_per_layer.push_back(layer.qk_amplification);
      const double s = sc.add("qk.amplification", lw.layer, layer.qk_amplification, thresholds.qk_amplification);
      layer.extreme = layer.extreme || sc.flagged(s);
      amplification = std::max(amplification, layer.qk_amplification);
    }
    layer.amplification = has_norm ? amplification : 1.0;
    if (has_norm) {
      sum_sq_amplification += layer.amplification * layer.amplification;
      ++stages;
    }
    res.layers.push_back(std::move(layer));
  }
  if (weights.final_norm) {
    res.final_norm = analyse(*weights.final_norm, NormRole::FinalNorm, -1, sc);
    sum_sq_amplification += res.final_norm->peak_gain * res.final_norm->peak_gain;
    ++stages;
    ++n_tensors;
  }

  // Independent local errors of the stages add in quadrature along the residual stream:
  // the model's figure is the rms of the stage figures (1 for unit weights everywhere).
  res.estimated_amplification = stages ? std::sqrt(sum_sq_amplification / stages) : 1.0;
  if (stages) sc.add("model.amplification", -1, res.estimated_amplification, thresholds.model_amplification);
  // Errors that q/k outliers put into attention compound through the layers that carry
  // them: the geometric mean over layers of max(A_qk, 1) is the per-layer factor of that
  // product at the model's depth (1 when no layer amplifies), each layer weighted by the
  // depth left after it (qk_depth_figure). docs/static-score.md.
  if (!qk_per_layer.empty()) {
    const std::optional<double> final_gain =
        res.final_norm ? std::optional<double>(res.final_norm->peak_gain) : std::nullopt;
    sc.add("model.qk_depth", -1, qk_depth_figure(qk_per_layer, final_gain), thresholds.qk_depth_amplification);
  }
  for (const SuperWeight& w : weights.super_weights) {
    sc.add("mlp.super_weight", w.layer, w.figure, thresholds.super_weight);
  }

  res.score = 1.0;
  const Component* worst = nullptr;
  int n_warn = 0, n_fail = 0;
  for (const auto& c : res.components) {
    if (!worst || c.score < worst->score) worst = &c;
    res.score = std::min(res.score, c.score);
    if (c.score < thresholds.status.incompatible_below) ++n_fail;
    else if (c.score < thresholds.status.warning_below) ++n_warn;
  }
  res.status = status_from_score(res.score, thresholds.status);

  const LayerResult* worst_layer = nullptr;
  for (const auto& l : res.layers) {
    if (!worst_layer || l.amplification > worst_layer->amplification) worst_layer = &l;
  }
  const std::string amplification_text =
      worst_layer ? fmt::format("estimated amplification {:.2f}x (model), {:.2f}x (worst layer, {})",
                                res.estimated_amplification, worst_layer->amplification, worst_layer->layer)
                  : fmt::format("estimated amplification {:.2f}x (model)", res.estimated_amplification);
  if (n_tensors == 0) {
    res.reason = "No norm tensors to analyse.";
  } else if (n_warn + n_fail == 0) {
    res.reason = fmt::format("All {} norm tensors within thresholds; largest figure: {}; {}", n_tensors,
                             describe(*worst), amplification_text);
  } else {
    res.reason = fmt::format("{} figure(s) past fail, {} past warn; worst: {}; {}", n_fail, n_warn,
                             describe(*worst), amplification_text);
  }

  switch (res.status) {
    case Status::Incompatible:
      res.recommendations.emplace_back("Use the standard kernels (automatic fallback); --force-fused overrides");
      res.recommendations.emplace_back(
          "Measure before trusting this weights-only verdict: `fusecheck run` (isolated and propagated modes) "
          "shows whether the flagged layers diverge");
      break;
    case Status::Warning:
      res.recommendations.emplace_back("Fused kernels will run; validate the flagged layers with `fusecheck run` "
                                       "before production use");
      break;
    case Status::Compatible:
      res.recommendations.emplace_back("Model is compatible with fused kernels (weights-only estimate; "
                                       "`fusecheck run` measures it)");
      break;
  }
  // The (up to) three layers whose own worst component scores lowest, worst first.
  std::vector<std::pair<double, int>> flagged;
  for (const auto& l : res.layers) {
    if (!l.extreme) continue;
    double s = 1.0;
    for (const auto& c : res.components) {
      if (c.layer == l.layer) s = std::min(s, c.score);
    }
    flagged.emplace_back(s, l.layer);
  }
  std::stable_sort(flagged.begin(), flagged.end());
  std::vector<int> ids;
  for (std::size_t i = 0; i < flagged.size() && i < 3; ++i) ids.push_back(flagged[i].second);
  if (!ids.empty()) {
    res.recommendations.push_back(fmt::format("Layers {} have the most extreme norm weights ({} flagged in all)",
                                              python_int_list(ids), flagged.size()));
  }
  return res;
}

}  // namespace fusecheck::check::detail
