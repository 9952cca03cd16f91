// Fitting the fusecheck scorer's ramps to observed outcomes (fit.h).
#include "harness/calibrate/fit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "harness/check/check.h"

namespace fusecheck::calibrate {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Per figure: the sorted distinct values over all models, and the cut just below one.
struct CutGrid {
  std::vector<double> values;
  double below(double v) const {
    auto it = std::lower_bound(values.begin(), values.end(), v);
    if (it == values.begin()) return v * 0.5;  // below every model: flags all of them
    return std::sqrt(*(it - 1) * v);
  }
};

}  // namespace

check::Ramp check::Thresholds::*ramp_member(int figure) {
  static constexpr check::Ramp check::Thresholds::*members[kFigures] = {
      &check::Thresholds::norm_ratio,          &check::Thresholds::hidden_norm_gain,
      &check::Thresholds::qk_amplification,    &check::Thresholds::model_amplification,
      &check::Thresholds::qk_depth_amplification, &check::Thresholds::super_weight};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("ramp_member");
  return members[figure];
}

std::string_view figure_name(int figure) {
  static constexpr std::string_view names[kFigures] = {"norm_ratio",          "hidden_norm_gain",
                                                       "qk_amplification",    "model_amplification",
                                                       "qk_depth_amplification", "super_weight"};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("figure_name");
  return names[figure];
}

int figure_of(const std::string& c) {
  if (c == "qk.amplification") return 2;
  if (c == "model.amplification") return 3;
  if (c == "model.qk_depth") return 4;
  if (c == "mlp.super_weight") return 5;
  if (ends_with(c, ".gain")) return 1;
  if (ends_with(c, ".ratio")) return 0;
  return -1;
}

FigureMaxima figure_maxima(std::span<const StaticComponent> components) {
  FigureMaxima m;
  m.fill(1.0);
  for (const auto& c : components) {
    const int f = figure_of(c.name);
    if (f >= 0) m[static_cast<std::size_t>(f)] = std::max(m[static_cast<std::size_t>(f)], c.value);
  }
  return m;
}

double rescore(std::span<const StaticComponent> components, const check::Thresholds& t) {
  double score = 1.0;
  for (const auto& c : components) {
    const int f = figure_of(c.name);
    if (f >= 0) score = std::min(score, check::ramp_score(c.value, t.*ramp_member(f), t.status));
  }
  return score;
}

bool flagged(const FigureMaxima& m, const std::array<double, kFigures>& cuts) {
  for (int k = 0; k < kFigures; ++k) {
    if (m[static_cast<std::size_t>(k)] > cuts[static_cast<std::size_t>(k)]) return true;
  }
  return false;
}

namespace {

using Cuts = std::array<double, kFigures>;

struct Search {
  std::span<const FigureMaxima> models;
  std::span<const int> labels;
  int allowed = 0;
  std::array<CutGrid, kFigures> grid;
  std::array<std::vector<double>, kFigures> candidates;  // largest first, +inf first of all

  struct Outcome {
    int false_alarms = 0;
    int misses = 0;
  };
  Outcome outcome(const Cuts& cuts) const {
    Outcome o;
    for (std::size_t i = 0; i < models.size(); ++i) {
      const bool f = flagged(models[i], cuts);
      if (f && labels[i] != 1) ++o.false_alarms;
      if (!f && labels[i] == 1) ++o.misses;
    }
    return o;
  }
  // Feasible first, then fewer false alarms, then fewer misses.
  bool better(const Outcome& a, const Outcome& b) const {
    const bool fa = a.misses <= allowed, fb = b.misses <= allowed;
    if (fa != fb) return fa;
    if (!fa) return a.misses < b.misses;
    if (a.false_alarms != b.false_alarms) return a.false_alarms < b.false_alarms;
    return a.misses < b.misses;
  }
  // The largest cut of figure k that, with the others as given, misses at most `allowed`:
  // just below the need-th largest value of k among the positives the others miss.
  double closed_form(Cuts cuts, int k) const {
    const auto K = static_cast<std::size_t>(k);
    cuts[K] = kInf;
    std::vector<double> uncaught;
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (labels[i] == 1 && !flagged(models[i], cuts)) uncaught.push_back(models[i][K]);
    }
    const int need = static_cast<int>(uncaught.size()) - allowed;
    if (need <= 0) return kInf;
    std::nth_element(uncaught.begin(), uncaught.begin() + (need - 1), uncaught.end(), std::greater<>());
    return grid[K].below(uncaught[static_cast<std::size_t>(need - 1)]);
  }
};

}  // namespace

CutFit fit_cuts(std::span<const FigureMaxima> models, std::span<const int> labels, double max_miss_rate) {
  if (models.size() != labels.size()) throw std::invalid_argument("fit_cuts: models and labels differ in length");
  const std::size_t n = models.size();
  const int positives = static_cast<int>(std::count(labels.begin(), labels.end(), 1));
  CutFit fit;
  // The small epsilon keeps 0.01 * 100 = 1 from rounding down to 0.
  fit.allowed_misses = static_cast<int>(std::floor(max_miss_rate * positives + 1e-9));

  Search s{models, labels, fit.allowed_misses, {}, {}};
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    auto& g = s.grid[K];
    for (const auto& m : models) g.values.push_back(m[K]);
    std::sort(g.values.begin(), g.values.end());
    g.values.erase(std::unique(g.values.begin(), g.values.end()), g.values.end());
    auto& c = s.candidates[K];
    c.push_back(kInf);
    for (std::size_t i = 0; i < n; ++i) {
      if (labels[i] == 1) c.push_back(g.below(models[i][K]));
    }
    std::sort(c.begin(), c.end(), std::greater<>());
    c.erase(std::unique(c.begin(), c.end()), c.end());
  }

  Cuts best;
  best.fill(kInf);
  auto best_outcome = s.outcome(best);
  auto consider = [&](const Cuts& cuts) {
    const auto o = s.outcome(cuts);
    if (!s.better(o, best_outcome)) return false;
    best = cuts;
    best_outcome = o;
    return true;
  };
  // Starts: each figure alone at its closed-form cut.
  for (int k = 0; k < kFigures; ++k) {
    Cuts cuts;
    cuts.fill(kInf);
    cuts[static_cast<std::size_t>(k)] = s.closed_form(cuts, k);
    consider(cuts);
  }
  // Pair moves until none improves: figure i to any useful cut, figure j to its closed form.
  for (bool improved = true; improved;) {
    improved = false;
    for (int i = 0; i < kFigures; ++i) {
      for (int j = 0; j < kFigures; ++j) {
        if (i == j) continue;
        for (double c : s.candidates[static_cast<std::size_t>(i)]) {
          Cuts trial = best;
          trial[static_cast<std::size_t>(i)] = c;
          trial[static_cast<std::size_t>(j)] = s.closed_form(trial, j);
          improved = consider(trial) || improved;
        }
      }
    }
  }
  // Ties go to the larger cuts: raise each as far as it goes at the same outcome.
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    for (double c : s.candidates[K]) {
      if (c <= best[K]) break;
      Cuts trial = best;
      trial[K] = c;
      const auto o = s.outcome(trial);
      if (o.false_alarms == best_outcome.false_alarms && o.misses == best_outcome.misses) {
        best = trial;
        break;
      }
    }
  }
  fit.cuts = best;
  std::vector<int> predicted(n);
  for (std::size_t i = 0; i < n; ++i) predicted[i] = flagged(models[i], fit.cuts) ? 1 : 0;
  fit.confusion = confusion(predicted, labels);
  return fit;
}

check::Thresholds thresholds_from_cuts(const CutFit& fail, const CutFit& warn, std::span<const FigureMaxima> models) {
  const check::Thresholds& defaults = check::default_thresholds();
  check::Thresholds t = defaults;
  t.evidence.reset();  // the caller counts what its own thresholds do
  t.outcome_rule.clear();
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    double largest = 0;
    for (const auto& m : models) largest = std::max(largest, m[K]);
    const check::Ramp& d = defaults.*ramp_member(k);
    // A ramp the defaults leave off: the hand-written defaults' usual warn/fail of 1/4.
    const double warn_over_fail = d.on() ? d.warn / d.fail : 0.25;
    double f = fail.cuts[K];
    if (!std::isfinite(f)) f = std::max(d.fail, 2 * largest);
    double w = warn.cuts[K];
    if (!std::isfinite(w) || w >= f) w = f * warn_over_fail;
    t.*ramp_member(k) = {w, f};
  }
  return t;
}

}  // namespace fusecheck::calibrate
