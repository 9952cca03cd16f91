// Fitting the fusecheck scorer's ramps to observed outcomes (fit.h).
#include "harness/calibrate/fit.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "harness/check/check.h"

namespace fusecheck::calibrate {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kFinalNormGain = 6;  // figure_name(6): scored on hidden_norm_gain's ramp in older files
// A warn cut at or above its fail cut sits just below it: the schema needs warn < fail,
// and the WARNING band of that figure is then empty on the sweep.
constexpr double kWarnBelowFail = 0.999;

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
      &check::Thresholds::qk_depth_amplification, &check::Thresholds::super_weight,
      &check::Thresholds::final_norm_gain};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("ramp_member");
  return members[figure];
}

std::string_view figure_name(int figure) {
  static constexpr std::string_view names[kFigures] = {"norm_ratio",          "hidden_norm_gain",
                                                       "qk_amplification",    "model_amplification",
                                                       "qk_depth_amplification", "super_weight",
                                                       "final_norm_gain"};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("figure_name");
  return names[figure];
}

int figure_of(const std::string& c) {
  if (c == "qk.amplification") return 2;
  if (c == "model.amplification") return 3;
  if (c == "model.qk_depth") return 4;
  if (c == "mlp.super_weight") return 5;
  if (c == "final_norm.gain") return kFinalNormGain;
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
    if (f < 0) continue;
    const check::Ramp& ramp = f == kFinalNormGain ? check::final_norm_gain_ramp(t) : t.*ramp_member(f);
    score = std::min(score, check::ramp_score(c.value, ramp, t.status));
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
using Mask = std::vector<std::uint64_t>;  // one bit per model: flagged

// The cut search over bit masks: which models a figure's cut flags is precomputed per
// candidate cut, so an outcome is a few word operations whatever the number of figures.
class Search {
 public:
  Search(std::span<const FigureMaxima> models, std::span<const int> labels, int allowed)
      : models_(models), labels_(labels), allowed_(allowed), words_((models.size() + 63) / 64),
        positives_mask_(words_, 0) {
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (labels[i] == 1) positives_mask_[i / 64] |= std::uint64_t{1} << (i % 64);
    }
    for (int k = 0; k < kFigures; ++k) {
      const auto K = static_cast<std::size_t>(k);
      auto& g = grid_[K];
      for (const auto& m : models) g.values.push_back(m[K]);
      std::sort(g.values.begin(), g.values.end());
      g.values.erase(std::unique(g.values.begin(), g.values.end()), g.values.end());
      auto& c = candidates_[K];
      c.push_back(kInf);
      for (std::size_t i = 0; i < models.size(); ++i) {
        if (labels[i] == 1) c.push_back(g.below(models[i][K]));
      }
      std::sort(c.begin(), c.end(), std::greater<>());
      c.erase(std::unique(c.begin(), c.end()), c.end());
      for (double cut : c) masks_[K].push_back(mask_of(k, cut));
      // Positives by this figure, largest first (the closed form walks them).
      for (std::size_t i = 0; i < models.size(); ++i) {
        if (labels[i] == 1) by_value_[K].push_back(i);
      }
      std::stable_sort(by_value_[K].begin(), by_value_[K].end(),
                       [&](std::size_t x, std::size_t y) { return models[x][K] > models[y][K]; });
    }
  }

  struct Outcome {
    int false_alarms = 0;
    int misses = 0;
  };
  const std::vector<double>& candidates(int k) const { return candidates_[static_cast<std::size_t>(k)]; }

  Mask flags(const Cuts& cuts) const {
    Mask m(words_, 0);
    for (int k = 0; k < kFigures; ++k) {
      if (std::isinf(cuts[static_cast<std::size_t>(k)])) continue;
      const Mask f = mask_of(k, cuts[static_cast<std::size_t>(k)]);
      for (std::size_t w = 0; w < words_; ++w) m[w] |= f[w];
    }
    return m;
  }
  Outcome outcome(const Mask& flagged) const {
    Outcome o;
    int caught = 0, flagged_count = 0;
    for (std::size_t w = 0; w < words_; ++w) {
      caught += std::popcount(flagged[w] & positives_mask_[w]);
      flagged_count += std::popcount(flagged[w]);
    }
    o.false_alarms = flagged_count - caught;
    o.misses = positive_count() - caught;
    return o;
  }
  // Feasible first, then fewer false alarms, then fewer misses.
  bool better(const Outcome& a, const Outcome& b) const {
    const bool fa = a.misses <= allowed_, fb = b.misses <= allowed_;
    if (fa != fb) return fa;
    if (!fa) return a.misses < b.misses;
    if (a.false_alarms != b.false_alarms) return a.false_alarms < b.false_alarms;
    return a.misses < b.misses;
  }
  // The largest cut of figure k that, with `others` flagged already, misses at most the
  // allowed number: just below the need-th largest value of k among the positives missed.
  double closed_form(const Mask& others, int k) const {
    const auto K = static_cast<std::size_t>(k);
    int uncaught = 0;
    for (std::size_t w = 0; w < words_; ++w) uncaught += std::popcount(positives_mask_[w] & ~others[w]);
    const int need = uncaught - allowed_;
    if (need <= 0) return kInf;
    int seen = 0;
    for (std::size_t i : by_value_[K]) {
      if (others[i / 64] >> (i % 64) & 1) continue;
      if (++seen == need) return grid_[K].below(models_[i][K]);
    }
    return kInf;  // not reached: need <= uncaught
  }
  const Mask& candidate_mask(int k, std::size_t index) const { return masks_[static_cast<std::size_t>(k)][index]; }

 private:
  int positive_count() const {
    int n = 0;
    for (auto w : positives_mask_) n += std::popcount(w);
    return n;
  }
  Mask mask_of(int k, double cut) const {
    Mask m(words_, 0);
    for (std::size_t i = 0; i < models_.size(); ++i) {
      if (models_[i][static_cast<std::size_t>(k)] > cut) m[i / 64] |= std::uint64_t{1} << (i % 64);
    }
    return m;
  }

  std::span<const FigureMaxima> models_;
  std::span<const int> labels_;
  int allowed_;
  std::size_t words_;
  Mask positives_mask_;
  std::array<CutGrid, kFigures> grid_;
  std::array<std::vector<double>, kFigures> candidates_;  // largest first, +inf first of all
  std::array<std::vector<Mask>, kFigures> masks_;         // per candidate
  std::array<std::vector<std::size_t>, kFigures> by_value_;
};

Mask either(const Mask& a, const Mask& b) {
  Mask m = a;
  for (std::size_t w = 0; w < m.size(); ++w) m[w] |= b[w];
  return m;
}

}  // namespace

CutFit fit_cuts(std::span<const FigureMaxima> models, std::span<const int> labels, double max_miss_rate) {
  if (models.size() != labels.size()) throw std::invalid_argument("fit_cuts: models and labels differ in length");
  const std::size_t n = models.size();
  const int positives = static_cast<int>(std::count(labels.begin(), labels.end(), 1));
  CutFit fit;
  // The small epsilon keeps 0.01 * 100 = 1 from rounding down to 0.
  fit.allowed_misses = static_cast<int>(std::floor(max_miss_rate * positives + 1e-9));
  const Search s(models, labels, fit.allowed_misses);

  Cuts best;
  best.fill(kInf);
  auto best_outcome = s.outcome(s.flags(best));
  auto consider = [&](const Cuts& cuts) {
    const auto o = s.outcome(s.flags(cuts));
    if (!s.better(o, best_outcome)) return false;
    best = cuts;
    best_outcome = o;
    return true;
  };
  // Exhaustive over every pair of figures' useful cuts with a third figure's closed form:
  // optimal whenever the best rule needs at most three figures (each may stay at +inf).
  for (int a = 0; a < kFigures; ++a) {
    for (int b = a + 1; b < kFigures; ++b) {
      for (std::size_t ia = 0; ia < s.candidates(a).size(); ++ia) {
        for (std::size_t ib = 0; ib < s.candidates(b).size(); ++ib) {
          const Mask ab = either(s.candidate_mask(a, ia), s.candidate_mask(b, ib));
          for (int c = 0; c < kFigures; ++c) {
            if (c == a || c == b) continue;
            Cuts cuts;
            cuts.fill(kInf);
            cuts[static_cast<std::size_t>(a)] = s.candidates(a)[ia];
            cuts[static_cast<std::size_t>(b)] = s.candidates(b)[ib];
            cuts[static_cast<std::size_t>(c)] = s.closed_form(ab, c);
            consider(cuts);
          }
        }
      }
    }
  }
  // Then pair moves, for rules that need more figures: figure i to any useful cut, figure j
  // to its closed form, until no move helps.
  for (bool improved = true; improved;) {
    improved = false;
    for (int i = 0; i < kFigures; ++i) {
      for (int j = 0; j < kFigures; ++j) {
        if (i == j) continue;
        for (double c : s.candidates(i)) {
          Cuts trial = best;
          trial[static_cast<std::size_t>(i)] = c;
          trial[static_cast<std::size_t>(j)] = kInf;
          trial[static_cast<std::size_t>(j)] = s.closed_form(s.flags(trial), j);
          improved = consider(trial) || improved;
        }
      }
    }
  }
  // Ties go to the larger cuts: raise each as far as it goes at the same outcome.
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    for (double c : s.candidates(k)) {
      if (c <= best[K]) break;
      Cuts trial = best;
      trial[K] = c;
      const auto o = s.outcome(s.flags(trial));
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

check::Thresholds thresholds_from_cuts(const CutFit& fail, const CutFit& warn, std::span<const FigureMaxima> models,
                                       const check::Thresholds& baseline) {
  const check::Thresholds& defaults = baseline;
  check::Thresholds t = defaults;
  t.evidence.reset();  // the caller counts what its own thresholds do
  t.outcome_rule.clear();
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    double largest = 0;
    for (const auto& m : models) largest = std::max(largest, m[K]);
    const check::Ramp& d = defaults.*ramp_member(k);
    double f = fail.cuts[K];
    if (!std::isfinite(f)) f = std::max(d.on() ? d.fail : 0.0, 2 * largest);
    // WARNING means what the fit says: every divergent model of the sweep at least WARNING
    // (the no-miss cut). The score keeps ranking below warn and past fail whatever the
    // width of the band (check::ramp_score), so the band is not widened by hand.
    double w = warn.cuts[K];
    if (!std::isfinite(w)) w = f;
    w = std::min(w, f * kWarnBelowFail);
    t.*ramp_member(k) = {w, f};
  }
  return t;
}

}  // namespace fusecheck::calibrate
