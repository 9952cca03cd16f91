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
      &check::Thresholds::norm_ratio, &check::Thresholds::hidden_norm_gain, &check::Thresholds::qk_amplification,
      &check::Thresholds::model_amplification};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("ramp_member");
  return members[figure];
}

std::string_view figure_name(int figure) {
  static constexpr std::string_view names[kFigures] = {"norm_ratio", "hidden_norm_gain", "qk_amplification",
                                                       "model_amplification"};
  if (figure < 0 || figure >= kFigures) throw std::out_of_range("figure_name");
  return names[figure];
}

int figure_of(const std::string& c) {
  if (c == "qk.amplification") return 2;
  if (c == "model.amplification") return 3;
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

CutFit fit_cuts(std::span<const FigureMaxima> models, std::span<const int> labels, double max_miss_rate) {
  if (models.size() != labels.size()) throw std::invalid_argument("fit_cuts: models and labels differ in length");
  const std::size_t n = models.size();
  const int positives = static_cast<int>(std::count(labels.begin(), labels.end(), 1));
  CutFit fit;
  // The small epsilon keeps 0.01 * 100 = 1 from rounding down to 0.
  fit.allowed_misses = static_cast<int>(std::floor(max_miss_rate * positives + 1e-9));

  std::array<CutGrid, kFigures> grid;
  std::array<std::vector<double>, kFigures> candidates;  // largest first
  for (int k = 0; k < kFigures; ++k) {
    auto& g = grid[static_cast<std::size_t>(k)];
    for (const auto& m : models) g.values.push_back(m[static_cast<std::size_t>(k)]);
    std::sort(g.values.begin(), g.values.end());
    g.values.erase(std::unique(g.values.begin(), g.values.end()), g.values.end());
    auto& c = candidates[static_cast<std::size_t>(k)];
    c.push_back(kInf);
    for (std::size_t i = 0; i < n; ++i) {
      if (labels[i] == 1) c.push_back(g.below(models[i][static_cast<std::size_t>(k)]));
    }
    std::sort(c.begin(), c.end(), std::greater<>());
    c.erase(std::unique(c.begin(), c.end()), c.end());
  }

  int best_fa = std::numeric_limits<int>::max(), best_miss = std::numeric_limits<int>::max();
  std::vector<char> hit(n);
  std::vector<double> uncaught;
  for (double c0 : candidates[0]) {
    for (double c1 : candidates[1]) {
      for (double c2 : candidates[2]) {
        int fa = 0;
        uncaught.clear();
        for (std::size_t i = 0; i < n; ++i) {
          hit[i] = models[i][0] > c0 || models[i][1] > c1 || models[i][2] > c2;
          if (hit[i] && labels[i] != 1) ++fa;
          if (!hit[i] && labels[i] == 1) uncaught.push_back(models[i][3]);
        }
        if (fa > best_fa) continue;
        // Figure 3 must catch all but the allowed misses of what is left: its cut goes
        // just below the need-th largest value among them.
        double c3 = kInf;
        const int need = static_cast<int>(uncaught.size()) - fit.allowed_misses;
        if (need > 0) {
          std::nth_element(uncaught.begin(), uncaught.begin() + (need - 1), uncaught.end(), std::greater<>());
          c3 = grid[3].below(uncaught[static_cast<std::size_t>(need - 1)]);
        }
        int miss = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const bool f = hit[i] || models[i][3] > c3;
          if (f && labels[i] != 1 && !hit[i]) ++fa;
          if (!f && labels[i] == 1) ++miss;
        }
        if (fa < best_fa || (fa == best_fa && miss < best_miss)) {
          best_fa = fa;
          best_miss = miss;
          fit.cuts = {c0, c1, c2, c3};
        }
      }
    }
  }
  std::vector<int> predicted(n);
  for (std::size_t i = 0; i < n; ++i) predicted[i] = flagged(models[i], fit.cuts) ? 1 : 0;
  fit.confusion = confusion(predicted, labels);
  return fit;
}

check::Thresholds thresholds_from_cuts(const CutFit& fail, const CutFit& warn, std::span<const FigureMaxima> models) {
  const check::Thresholds& defaults = check::default_thresholds();
  check::Thresholds t = defaults;
  for (int k = 0; k < kFigures; ++k) {
    const auto K = static_cast<std::size_t>(k);
    double largest = 0;
    for (const auto& m : models) largest = std::max(largest, m[K]);
    const check::Ramp& d = defaults.*ramp_member(k);
    double f = fail.cuts[K];
    if (!std::isfinite(f)) f = std::max(d.fail, 2 * largest);
    double w = warn.cuts[K];
    if (!std::isfinite(w) || w >= f) w = f * d.warn / d.fail;
    t.*ramp_member(k) = {w, f};
  }
  return t;
}

}  // namespace fusecheck::calibrate
