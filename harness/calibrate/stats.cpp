// ROC, AUC, bootstrap interval and confusion matrices (stats.h).
#include "harness/calibrate/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "harness/run/metrics.h"

namespace fusecheck::calibrate {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_sizes(std::span<const double> scores, std::span<const int> labels, const char* what) {
  if (scores.size() != labels.size()) throw std::invalid_argument(std::string(what) + ": scores and labels differ in length");
}

// Mann-Whitney AUC over index lists of positives and negatives (O(n log n) via ranks).
double auc_of(std::span<const double> scores, const std::vector<std::size_t>& pos, const std::vector<std::size_t>& neg) {
  if (pos.empty() || neg.empty()) return kNaN;
  // Pool, sort, give tied runs their average rank, then U = sum of positive ranks - P(P+1)/2.
  struct Item {
    double score;
    bool positive;
  };
  std::vector<Item> items;
  items.reserve(pos.size() + neg.size());
  for (auto i : pos) items.push_back({scores[i], true});
  for (auto i : neg) items.push_back({scores[i], false});
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.score < b.score; });
  double rank_sum = 0;
  for (std::size_t i = 0; i < items.size();) {
    std::size_t j = i;
    while (j < items.size() && items[j].score == items[i].score) ++j;
    const double average_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1..j
    for (std::size_t k = i; k < j; ++k) {
      if (items[k].positive) rank_sum += average_rank;
    }
    i = j;
  }
  const double p = static_cast<double>(pos.size()), n = static_cast<double>(neg.size());
  return (rank_sum - p * (p + 1) / 2) / (p * n);
}

}  // namespace

std::vector<RocPoint> roc_curve(std::span<const double> scores, std::span<const int> labels) {
  check_sizes(scores, labels, "roc_curve");
  const double positives = static_cast<double>(std::count(labels.begin(), labels.end(), 1));
  const double negatives = static_cast<double>(labels.size()) - positives;
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  std::vector<RocPoint> curve{{std::numeric_limits<double>::infinity(), 0.0, 0.0}};
  double tp = 0, fp = 0;
  for (std::size_t i = 0; i < order.size();) {
    const double s = scores[order[i]];
    for (; i < order.size() && scores[order[i]] == s; ++i) (labels[order[i]] == 1 ? tp : fp) += 1;
    curve.push_back({s, negatives > 0 ? fp / negatives : kNaN, positives > 0 ? tp / positives : kNaN});
  }
  return curve;
}

double auc(std::span<const double> scores, std::span<const int> labels) {
  check_sizes(scores, labels, "auc");
  std::vector<std::size_t> pos, neg;
  for (std::size_t i = 0; i < labels.size(); ++i) (labels[i] == 1 ? pos : neg).push_back(i);
  return auc_of(scores, pos, neg);
}

std::uint64_t bounded_draw(std::mt19937_64& rng, std::uint64_t n) {
  if (n == 0) throw std::invalid_argument("bounded_draw: empty range");
  // 128-bit product: the high word is uniform in [0, n) once the low word's biased
  // region (below 2^64 mod n) is rejected.
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * n;
  auto low = static_cast<std::uint64_t>(m);
  if (low < n) {
    const std::uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * n;
      low = static_cast<std::uint64_t>(m);
    }
  }
  return static_cast<std::uint64_t>(m >> 64);
}

Interval bootstrap_auc(std::span<const double> scores, std::span<const int> labels, int resamples,
                       std::uint64_t seed, double level) {
  check_sizes(scores, labels, "bootstrap_auc");
  if (resamples < 1) throw std::invalid_argument("bootstrap_auc: resamples must be positive");
  if (!(level > 0 && level < 1)) throw std::invalid_argument("bootstrap_auc: level must be in (0, 1)");
  std::vector<std::size_t> pos, neg;
  for (std::size_t i = 0; i < labels.size(); ++i) (labels[i] == 1 ? pos : neg).push_back(i);
  if (pos.empty() || neg.empty()) return {kNaN, kNaN};
  std::mt19937_64 rng(seed);
  std::vector<double> draws;
  draws.reserve(static_cast<std::size_t>(resamples));
  std::vector<std::size_t> p(pos.size()), n(neg.size());
  for (int r = 0; r < resamples; ++r) {
    for (auto& i : p) i = pos[bounded_draw(rng, pos.size())];
    for (auto& i : n) i = neg[bounded_draw(rng, neg.size())];
    draws.push_back(auc_of(scores, p, n));
  }
  const double tail = (1 - level) / 2;
  return {run::quantile(draws, tail), run::quantile(draws, 1 - tail)};
}

double Confusion::miss_rate() const {
  return positives() > 0 ? static_cast<double>(false_negative) / positives() : kNaN;
}

double Confusion::false_alarm_rate() const {
  return negatives() > 0 ? static_cast<double>(false_positive) / negatives() : kNaN;
}

Confusion confusion(std::span<const int> predicted, std::span<const int> labels) {
  if (predicted.size() != labels.size()) throw std::invalid_argument("confusion: predictions and labels differ in length");
  Confusion c;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const bool p = predicted[i] == 1, l = labels[i] == 1;
    if (p && l) ++c.true_positive;
    else if (p) ++c.false_positive;
    else if (l) ++c.false_negative;
    else ++c.true_negative;
  }
  return c;
}

double spearman(std::span<const double> a, std::span<const double> b) { return run::spearman(a, b); }

}  // namespace fusecheck::calibrate
