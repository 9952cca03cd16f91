// Fitting the fusecheck scorer's thresholds to observed outcomes. With the status cutoffs
// fixed (0.8 / 0.5), a model is INCOMPATIBLE exactly when one of its figures passes its
// ramp's `fail` point, WARNING when one passes `warn` (docs/static-score.md). So fitting
// `fail` is choosing one cut per figure family (norm ratio, hidden-norm gain, q/k
// amplification, model amplification, q/k depth amplification, super weight, final-norm
// gain) for the rule "flag when any figure > its cut": at most the allowed share of
// divergent models missed, then the fewest false alarms. The fit decides which figures take part: one
// that catches nothing the others miss is left at +inf.
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "harness/calibrate/records.h"
#include "harness/calibrate/stats.h"
#include "harness/check/thresholds.h"

namespace fusecheck::calibrate {

inline constexpr int kFigures = 7;
// The thresholds file's ramp names, in this order, and the Thresholds member of each.
std::string_view figure_name(int figure);
check::Ramp check::Thresholds::*ramp_member(int figure);
// The ramp a fusecheck component feeds ("k_norm.ratio" -> norm_ratio = 0, "attn_norm.gain"
// -> hidden_norm_gain = 1, "qk.amplification" -> 2, "model.amplification" -> 3,
// "model.qk_depth" -> qk_depth_amplification = 4, "mlp.super_weight" -> super_weight = 5,
// "final_norm.gain" -> final_norm_gain = 6); -1 if none.
int figure_of(const std::string& component);

// A model's largest value of each figure family (1 where it has none).
using FigureMaxima = std::array<double, kFigures>;
FigureMaxima figure_maxima(std::span<const StaticComponent> components);

// The fusecheck score of a model under `t`: the minimum of its components' ramps.
double rescore(std::span<const StaticComponent> components, const check::Thresholds& t);

// Flagged when any figure is above its cut.
bool flagged(const FigureMaxima& m, const std::array<double, kFigures>& cuts);

struct CutFit {
  std::array<double, kFigures> cuts{};  // +inf: the figure is not needed to catch anything
  Confusion confusion;                  // on the data fitted
  int allowed_misses = 0;
};

// Cuts such that at most floor(max_miss_rate * positives) positives are missed, then the
// fewest negatives flagged; ties go to the larger cuts (fewer flags off the sweep). Every
// cut sits at the geometric midpoint between a divergent model's value and the next value
// below it of any model, so no model lies on a cut. Search: exhaustive over every pair of
// figures' useful cuts with a third figure at the largest cut that keeps the miss bound
// (closed form), which is optimal whenever the best rule uses at most three figures; then
// pair moves (one figure to any useful cut, another to its closed form) until none helps;
// then every cut is raised as far as it goes at the same outcome. Exhaustive search over
// all six figures' cuts is out of reach; tests hold this one against it on small problems.
CutFit fit_cuts(std::span<const FigureMaxima> models, std::span<const int> labels, double max_miss_rate);

// The thresholds file from fitted cuts: `fail` = the cuts at the allowed miss rate,
// `warn` = the cuts at no miss (every divergent model at least WARNING), just below `fail`
// (0.999 fail) when not lower (the ramp keeps ranking on both sides of its cuts,
// check::ramp_score, so no band is widened by hand). A fail cut of +inf becomes the
// larger of the baseline's fail and twice the largest value seen, so the figure never
// fires on models like the sweep's. Status cutoffs stay the baseline's.
check::Thresholds thresholds_from_cuts(const CutFit& fail, const CutFit& warn, std::span<const FigureMaxima> models,
                                       const check::Thresholds& baseline);

}  // namespace fusecheck::calibrate
