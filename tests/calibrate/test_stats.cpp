// ROC, AUC, bootstrap interval, confusion matrix and Spearman against values worked out
// by hand.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "harness/calibrate/stats.h"

namespace fusecheck::calibrate {
namespace {

TEST(CalibrateStats, AucCountsPairsWonByPositives) {
  // Positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 0.9>0.5, 0.9>0.1, 0.4>0.1; lost 0.4<0.5.
  const std::vector<double> s = {0.9, 0.5, 0.4, 0.1};
  const std::vector<int> l = {1, 0, 1, 0};
  EXPECT_DOUBLE_EQ(auc(s, l), 3.0 / 4.0);
}

TEST(CalibrateStats, AucCountsTiesAsHalf) {
  // Positive 0.5 ties negative 0.5 (1/2) and beats 0.2 (1); positive 0.7 beats both: 3.5 / 4.
  const std::vector<double> s = {0.5, 0.7, 0.5, 0.2};
  const std::vector<int> l = {1, 1, 0, 0};
  EXPECT_DOUBLE_EQ(auc(s, l), 3.5 / 4.0);
}

TEST(CalibrateStats, AucIsUndefinedWithOneClass) {
  const std::vector<double> s = {0.1, 0.2};
  EXPECT_TRUE(std::isnan(auc(s, std::vector<int>{1, 1})));
  EXPECT_TRUE(std::isnan(auc(s, std::vector<int>{0, 0})));
}

TEST(CalibrateStats, RocStepsThroughEachDistinctScore) {
  const std::vector<double> s = {0.9, 0.5, 0.5, 0.1};
  const std::vector<int> l = {1, 1, 0, 0};
  const auto roc = roc_curve(s, l);
  ASSERT_EQ(roc.size(), 4u);  // +inf, 0.9, 0.5 (tied pair together), 0.1
  EXPECT_TRUE(std::isinf(roc[0].threshold));
  EXPECT_DOUBLE_EQ(roc[1].true_positive_rate, 0.5);
  EXPECT_DOUBLE_EQ(roc[1].false_positive_rate, 0.0);
  EXPECT_DOUBLE_EQ(roc[2].true_positive_rate, 1.0);
  EXPECT_DOUBLE_EQ(roc[2].false_positive_rate, 0.5);
  EXPECT_DOUBLE_EQ(roc[3].false_positive_rate, 1.0);
}

TEST(CalibrateStats, BootstrapIsDeterministicForASeedAndBracketsTheAuc) {
  std::vector<double> s;
  std::vector<int> l;
  for (int i = 0; i < 40; ++i) {
    s.push_back(std::sin(1.7 * i) + (i % 2 ? 0.6 : 0.0));  // positives shifted up: AUC well above 1/2
    l.push_back(i % 2);
  }
  const Interval a = bootstrap_auc(s, l, 500, 42), b = bootstrap_auc(s, l, 500, 42), c = bootstrap_auc(s, l, 500, 43);
  EXPECT_EQ(a.low, b.low);
  EXPECT_EQ(a.high, b.high);
  EXPECT_TRUE(a.low != c.low || a.high != c.high);
  const double point = auc(s, l);
  EXPECT_LT(a.low, point);
  EXPECT_GT(a.high, point);
  EXPECT_LE(a.high, 1.0);
}

TEST(CalibrateStats, BoundedDrawStaysInRangeAndReachesEveryValue) {
  std::mt19937_64 rng(7);
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 1000; ++i) {
    const auto v = bounded_draw(rng, 5);
    ASSERT_LT(v, 5u);
    ++seen[v];
  }
  for (int n : seen) EXPECT_GT(n, 150);  // 200 expected each
}

TEST(CalibrateStats, ConfusionCountsEachCell) {
  const std::vector<int> predicted = {1, 1, 0, 0, 1, 0};
  const std::vector<int> labels = {1, 0, 1, 0, 1, 0};
  const Confusion c = confusion(predicted, labels);
  EXPECT_EQ(c.true_positive, 2);
  EXPECT_EQ(c.false_positive, 1);
  EXPECT_EQ(c.false_negative, 1);
  EXPECT_EQ(c.true_negative, 2);
  EXPECT_DOUBLE_EQ(c.miss_rate(), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(c.false_alarm_rate(), 1.0 / 3.0);
}

TEST(CalibrateStats, SpearmanGivesTiesTheirAverageRank) {
  // a ranks 1, 2.5, 2.5, 4; b ranks 1, 2, 3, 4: Pearson of the ranks = 0.9486833 (= 3/sqrt(10)).
  const std::vector<double> a = {1, 2, 2, 3};
  const std::vector<double> b = {10, 20, 30, 40};
  EXPECT_NEAR(spearman(a, b), 3.0 / std::sqrt(10.0), 1e-12);
  const std::vector<double> reversed = {40, 30, 20, 10};
  EXPECT_NEAR(spearman(a, reversed), -3.0 / std::sqrt(10.0), 1e-12);
}

}  // namespace
}  // namespace fusecheck::calibrate
