// Statistics calibration needs: ROC curves and AUC (ties counted half), a seeded
// stratified bootstrap interval for the AUC, confusion matrices. Pure functions over
// plain vectors, so tests check them against values worked out by hand.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace fusecheck::calibrate {

// One operating point: "positive" (predicted divergent) when score >= threshold.
struct RocPoint {
  double threshold = 0;
  double false_positive_rate = 0;
  double true_positive_rate = 0;
};

// Scores are oriented so that larger means "more likely divergent"; labels are 1
// (divergent) or 0. The curve runs from (0, 0) (threshold +inf) to (1, 1), one point per
// distinct score, tied scores moving together (a diagonal step).
std::vector<RocPoint> roc_curve(std::span<const double> scores, std::span<const int> labels);

// Area under the ROC curve = P(score of a random positive > that of a random negative),
// ties counting 1/2 (Mann-Whitney). NaN when either class is empty.
double auc(std::span<const double> scores, std::span<const int> labels);

struct Interval {
  double low = 0;
  double high = 0;
};

// Percentile bootstrap interval of the AUC at `level` (e.g. 0.95): `resamples` draws,
// each resampling positives and negatives separately with replacement (stratified, so
// every draw has both classes and the AUC is always defined). Deterministic for a seed
// on every platform (own bounded draw from mt19937_64, no std distribution).
// {NaN, NaN} when either class is empty.
Interval bootstrap_auc(std::span<const double> scores, std::span<const int> labels, int resamples,
                       std::uint64_t seed, double level = 0.95);

// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift with rejection): the same
// sequence from the same generator on every standard library.
std::uint64_t bounded_draw(std::mt19937_64& rng, std::uint64_t n);

struct Confusion {
  int true_positive = 0;   // predicted divergent, diverged
  int false_positive = 0;  // predicted divergent, did not (false alarm)
  int true_negative = 0;
  int false_negative = 0;  // predicted fine, diverged (miss)
  int positives() const { return true_positive + false_negative; }
  int negatives() const { return false_positive + true_negative; }
  double miss_rate() const;         // FN / positives (NaN without positives)
  double false_alarm_rate() const;  // FP / negatives (NaN without negatives)
};

Confusion confusion(std::span<const int> predicted, std::span<const int> labels);

// Spearman rank correlation with average ranks for ties, over pairs where both are
// finite; NaN with fewer than 3 pairs or a constant side. (The run's cross-check uses
// the same definition: harness/run/metrics.h.)
double spearman(std::span<const double> a, std::span<const double> b);

}  // namespace fusecheck::calibrate
