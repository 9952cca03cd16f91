// Threshold fitting: cuts at the miss-rate bound, fewest false alarms, geometric
// midpoints; rescoring under thresholds.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "harness/calibrate/calibrate.h"
#include "harness/calibrate/fit.h"
#include "harness/check/thresholds.h"

namespace fusecheck::calibrate {
namespace {

FigureMaxima ratio_only(double r) { return {r, 1.0, 1.0, 1.0}; }

TEST(CalibrateFit, ComponentsMapOntoTheirRamps) {
  EXPECT_EQ(figure_of("k_norm.ratio"), 0);
  EXPECT_EQ(figure_of("final_norm.ratio"), 0);
  EXPECT_EQ(figure_of("attn_norm.gain"), 1);
  EXPECT_EQ(figure_of("qk.amplification"), 2);
  EXPECT_EQ(figure_of("model.amplification"), 3);
  EXPECT_EQ(figure_of("something.else"), -1);
}

TEST(CalibrateFit, SingleFiguresAreTheMaximaAndTheGeometricMeanOfQkAmplification) {
  // q/k amplification 4, 0.5 (counts as 1) and 9 over three layers: geometric mean
  // (4 * 1 * 9)^(1/3) = 36^(1/3); the maxima are the largest value of each family.
  const std::vector<StaticComponent> comps = {
      {"k_norm.ratio", 0, 10.0}, {"attn_norm.ratio", 1, 30.0}, {"attn_norm.gain", 0, 3.0},
      {"qk.amplification", 0, 4.0}, {"qk.amplification", 1, 0.5}, {"qk.amplification", 2, 9.0},
      {"model.amplification", -1, 2.5}};
  const auto f = single_figures(comps);
  ASSERT_EQ(f.size(), 5u);
  EXPECT_DOUBLE_EQ(f[0].second, 30.0);
  EXPECT_DOUBLE_EQ(f[1].second, 3.0);
  EXPECT_DOUBLE_EQ(f[2].second, 9.0);
  EXPECT_DOUBLE_EQ(f[3].second, 2.5);
  EXPECT_NEAR(f[4].second, std::cbrt(36.0), 1e-12);
  // No q/k figures at all (Llama): the geometric mean is 1, not NaN.
  EXPECT_DOUBLE_EQ(single_figures(std::vector<StaticComponent>{{"attn_norm.gain", 0, 2.0}})[4].second, 1.0);
}

TEST(CalibrateFit, NoMissAllowedPutsTheCutJustBelowTheSmallestDivergentValue) {
  // Ratios 2, 4, 8, 16, 32, 100 with labels 0, 0, 1, 0, 1, 1: the cut must sit below 8,
  // at sqrt(4 * 8), flagging 8, 16, 32, 100: one false alarm (16).
  const std::vector<FigureMaxima> m = {ratio_only(2), ratio_only(4), ratio_only(8), ratio_only(16), ratio_only(32),
                                       ratio_only(100)};
  const std::vector<int> l = {0, 0, 1, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.0);
  EXPECT_DOUBLE_EQ(fit.cuts[0], std::sqrt(32.0));
  EXPECT_TRUE(std::isinf(fit.cuts[1]) && std::isinf(fit.cuts[2]) && std::isinf(fit.cuts[3]));
  EXPECT_EQ(fit.confusion.true_positive, 3);
  EXPECT_EQ(fit.confusion.false_positive, 1);
  EXPECT_EQ(fit.confusion.false_negative, 0);
}

TEST(CalibrateFit, AnAllowedMissBuysFewerFalseAlarms) {
  // A third of the positives may be missed: leaving out 8 gives a cut at sqrt(16 * 32)
  // and no false alarm.
  const std::vector<FigureMaxima> m = {ratio_only(2), ratio_only(4), ratio_only(8), ratio_only(16), ratio_only(32),
                                       ratio_only(100)};
  const std::vector<int> l = {0, 0, 1, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.34);
  EXPECT_EQ(fit.allowed_misses, 1);
  EXPECT_DOUBLE_EQ(fit.cuts[0], std::sqrt(16.0 * 32.0));
  EXPECT_EQ(fit.confusion.false_positive, 0);
  EXPECT_EQ(fit.confusion.false_negative, 1);
}

TEST(CalibrateFit, TheFigureThatSeparatesIsTheOneCut) {
  // The norm ratio is useless (same on both classes); the q/k amplification separates.
  const std::vector<FigureMaxima> m = {{5, 1, 2, 1}, {5, 1, 3, 1}, {5, 1, 40, 1}, {5, 1, 60, 1}};
  const std::vector<int> l = {0, 0, 1, 1};
  const CutFit fit = fit_cuts(m, l, 0.0);
  EXPECT_TRUE(std::isinf(fit.cuts[0]));
  EXPECT_DOUBLE_EQ(fit.cuts[2], std::sqrt(3.0 * 40.0));
  EXPECT_EQ(fit.confusion.false_positive, 0);
}

TEST(CalibrateFit, ThresholdsKeepWarnBelowFailAndFillUnneededRamps) {
  const std::vector<FigureMaxima> m = {ratio_only(4), ratio_only(8)};
  CutFit fail, warn;
  fail.cuts = {std::sqrt(32.0), INFINITY, INFINITY, INFINITY};
  warn.cuts = fail.cuts;
  const check::Thresholds t = thresholds_from_cuts(fail, warn, m);
  EXPECT_DOUBLE_EQ(t.norm_ratio.fail, std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(t.norm_ratio.warn, std::sqrt(32.0) * 16.0 / 64.0);  // the default warn/fail ratio
  EXPECT_DOUBLE_EQ(t.qk_amplification.fail, 32.0);  // default fail: above twice every value seen (2)
  EXPECT_LT(t.qk_amplification.warn, t.qk_amplification.fail);
}

TEST(CalibrateFit, RescoreIsTheWorstRamp) {
  check::Thresholds t = check::default_thresholds();
  const std::vector<StaticComponent> c = {{"k_norm.ratio", 0, 16.0}, {"qk.amplification", 0, 2.0}};
  EXPECT_NEAR(rescore(c, t), 0.8, 1e-12);  // k_norm ratio at its warn point
  t.norm_ratio = {2.0, 8.0};
  EXPECT_LT(rescore(c, t), 0.5);  // now past fail
}

}  // namespace
}  // namespace fusecheck::calibrate
